// Lint rules are the project's rules: type-checked TypeScript, no floating promises, no import
// cycles, every package declares what it imports, and each driver stays in its adapter's package.
import js from '@eslint/js';
import comments from '@eslint-community/eslint-plugin-eslint-comments/configs';
import importX from 'eslint-plugin-import-x';
import globals from 'globals';
import tseslint from 'typescript-eslint';

/** Drivers and the only places allowed to import them (production code; tests may observe with them). */
const BOUNDARIES = [
  { name: 'dockerode', allowedIn: ['packages/runtime/src/**'], why: 'the engine is reached through the ContainerRuntime port' },
  { name: 'mongodb', allowedIn: ['packages/event-store/src/**'], why: 'stores are reached through the Store port' },
  { name: 'better-sqlite3', allowedIn: ['packages/event-store/src/**'], why: 'stores are reached through the Store port' },
  { name: 'prom-client', allowedIn: ['packages/metrics/src/**', 'apps/*/src/**'], why: 'packages take the Metrics interface' },
  { name: 'pino', allowedIn: ['apps/*/src/**', 'scripts/**'], why: 'packages take the Logger port; apps wire pino in' },
];
const PRODUCTION = ['packages/*/src/**/*.ts', 'apps/*/src/**/*.{ts,tsx}', 'runner/src/**/*.ts', 'scripts/**/*.ts'];

const ruleId = (driver) => driver.replace(/[^a-z0-9]/gi, '-');

/** One block per driver: production files outside the driver's packages may not import it. */
const boundaryBlocks = () =>
  BOUNDARIES.map((b) => ({
    name: `mgx/boundary/${b.name}`,
    files: PRODUCTION,
    ignores: b.allowedIn,
    plugins: { 'mgx-boundary': boundaryPlugin },
    rules: { [`mgx-boundary/${ruleId(b.name)}`]: 'error' },
  }));

/** A tiny local plugin: one rule per driver, reporting an import outside its allowed packages. */
const boundaryPlugin = {
  rules: Object.fromEntries(
    BOUNDARIES.map((b) => [
      ruleId(b.name),
      {
        meta: {
          type: 'problem',
          schema: [],
          messages: { forbidden: `'{{name}}' is imported only in ${b.allowedIn.join(', ')}: ${b.why}.` },
        },
        create(context) {
          const check = (node, source) => {
            if (typeof source !== 'string') return;
            if (source === b.name || source.startsWith(`${b.name}/`))
              context.report({ node, messageId: 'forbidden', data: { name: b.name } });
          };
          return {
            ImportDeclaration: (node) => check(node, node.source.value),
            ImportExpression: (node) => check(node, node.source.type === 'Literal' ? node.source.value : undefined),
            ExportNamedDeclaration: (node) => node.source && check(node, node.source.value),
            ExportAllDeclaration: (node) => check(node, node.source.value),
          };
        },
      },
    ]),
  ),
};

export default tseslint.config(
  {
    ignores: ['**/node_modules/**', '**/dist/**', 'runner/.build/**', 'data/**', '.nx/**', 'coverage/**', 'test/.reliability/**'],
  },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  comments.recommended,
  {
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ['*.js', '*.mjs', 'scripts/*.mjs', 'apps/cli/bin/*.js', 'test/support/*.cjs'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    plugins: { 'import-x': importX },
    settings: {
      'import-x/resolver-next': [importX.createNodeResolver({ extensions: ['.ts', '.tsx', '.js', '.mjs', '.cjs', '.json'] })],
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      // ports are async; an adapter that happens to be synchronous (SQLite) implements them with
      // async methods so that a throw becomes a rejection, as callers of the port expect
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-misused-promises': 'error',
      // `x!` only with a disable comment that says why it holds
      '@typescript-eslint/no-non-null-assertion': 'error',
      '@eslint-community/eslint-comments/require-description': ['error', { ignore: [] }],
      '@eslint-community/eslint-comments/disable-enable-pair': ['error', { allowWholeFile: true }],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      'import-x/no-cycle': 'error',
      'import-x/no-self-import': 'error',
      'import-x/no-duplicates': 'error',
      // each package declares what it imports, in its own package.json
      'import-x/no-extraneous-dependencies': ['error', { devDependencies: true, includeInternal: true, includeTypes: true }],
      'no-restricted-syntax': ['error', { selector: 'ExportAllDeclaration', message: 'List exports by name: no `export *` of internals.' }],
    },
  },
  ...boundaryBlocks(),
  {
    // tests read JSON off real servers and index arrays they just asserted the length of
    files: ['**/test/**/*.ts', 'test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
    },
  },
  {
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: { globals: globals.node },
  },
  {
    files: ['**/*.cjs'],
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
