import { Section } from '../ui';

export function SandboxPage({ id, tab }: { id: string; tab: string }) {
  return <Section title={id + tab}>{null}</Section>;
}
