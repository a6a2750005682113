import { Section } from './ui';

export function TemplatesPage() {
  return <Section title="templates">{null}</Section>;
}
