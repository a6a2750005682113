import { Section } from './ui';

export function TeamsPage() {
  return <Section title="teams">{null}</Section>;
}
