import { describe, expect, it } from 'vitest';
import { catalogFromLabels, FRAMEWORK_CATALOG_LABEL, frameworkCatalog } from '../src/catalog.js';

describe('the framework catalog in an image label', () => {
  it('reads back what the build wrote', () => {
    const labels = { [FRAMEWORK_CATALOG_LABEL]: JSON.stringify(frameworkCatalog()), 'mgx.build-hash': 'x' };
    expect(catalogFromLabels(labels)).toEqual(frameworkCatalog());
    expect(frameworkCatalog().map((f) => f.name)).toEqual(['script', 'exec', 'openai']);
  });

  it('is undefined for an image built without it, and refuses a malformed one', () => {
    expect(catalogFromLabels({ 'mgx.frameworks': 'script,exec,openai' })).toBeUndefined();
    expect(() => catalogFromLabels({ [FRAMEWORK_CATALOG_LABEL]: 'script' })).toThrow(/not JSON/);
    expect(() => catalogFromLabels({ [FRAMEWORK_CATALOG_LABEL]: '{}' })).toThrow(/not a JSON array/);
    expect(() => catalogFromLabels({ [FRAMEWORK_CATALOG_LABEL]: '[{"name":"x"}]' })).toThrow(/entry 0/);
  });

  it('keeps only the known fields, requiresEgress false unless true', () => {
    const entry = { name: 'mine', description: 'd', optionsSchema: { type: 'object' }, extra: 1 };
    expect(catalogFromLabels({ [FRAMEWORK_CATALOG_LABEL]: JSON.stringify([entry]) })).toEqual([
      { name: 'mine', description: 'd', optionsSchema: { type: 'object' }, requiresEgress: false },
    ]);
  });
});
