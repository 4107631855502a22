import { builtinFrameworks } from './frameworks/index.js';

/** What `frameworks.list` reports of one framework. */
export interface FrameworkEntry {
  name: string;
  description: string;
  optionsSchema: Record<string, unknown>;
  requiresEgress: boolean;
}

/**
 * The image label holding the catalog of the runner bundled in an agent image, as JSON
 * (infra/build-agent.sh writes it from the bundle itself: `node runner.mjs --catalog`).
 */
export const FRAMEWORK_CATALOG_LABEL = 'mgx.framework-catalog';

/** Name, description and options schema of every bundled framework (for `frameworks.list`). */
export function frameworkCatalog(): FrameworkEntry[] {
  return builtinFrameworks()
    .list()
    .map((f) => ({ name: f.name, description: f.description, optionsSchema: f.optionsSchema, requiresEgress: f.requiresEgress === true }));
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The catalog recorded in an image's labels; undefined when the image has no such label (it
 * was built before the label existed). Throws when the label is there but malformed.
 */
export function catalogFromLabels(labels: Record<string, string>): FrameworkEntry[] | undefined {
  const raw = labels[FRAMEWORK_CATALOG_LABEL];
  if (raw === undefined || raw === '') return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new Error(`image label ${FRAMEWORK_CATALOG_LABEL} is not JSON`);
  }
  if (!Array.isArray(parsed)) throw new Error(`image label ${FRAMEWORK_CATALOG_LABEL} is not a JSON array`);
  return parsed.map((f: unknown, i) => {
    if (!isRecord(f) || typeof f.name !== 'string' || f.name === '' || typeof f.description !== 'string' || !isRecord(f.optionsSchema)) {
      throw new Error(`image label ${FRAMEWORK_CATALOG_LABEL}: entry ${i} lacks a name, description or optionsSchema`);
    }
    return { name: f.name, description: f.description, optionsSchema: f.optionsSchema, requiresEgress: f.requiresEgress === true };
  });
}

/**
 * Names of the session secrets `framework` needs for these options and prompt, as the bundled
 * framework declares them (Framework.secretsWanted). The host sends the runner only these: a
 * framework this checkout does not know, or one that declares nothing, gets none.
 */
export function secretsWanted(framework: string, options: Record<string, unknown>, prompt: string): string[] {
  const f = builtinFrameworks().get(framework);
  try {
    return f?.secretsWanted?.(options, prompt) ?? [];
  } catch {
    // options the framework will refuse when it runs: it needs nothing to say so
    return [];
  }
}
