import { Section } from './ui';

export function KeysPage() {
  return <Section title="keys">{null}</Section>;
}
