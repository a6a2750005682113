import { Section } from './ui';

export function HostsPage() {
  return <Section title="hosts">{null}</Section>;
}
