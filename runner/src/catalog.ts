import { builtinFrameworks } from './frameworks/index.js';

/** Name, description and options schema of every bundled framework (for `frameworks.list`). */
export function frameworkCatalog(): Array<{
  name: string;
  description: string;
  optionsSchema: Record<string, unknown>;
  requiresEgress: boolean;
}> {
  return builtinFrameworks()
    .list()
    .map((f) => ({ name: f.name, description: f.description, optionsSchema: f.optionsSchema, requiresEgress: f.requiresEgress === true }));
}
