import { FrameworkRegistry } from '@mgx/agent-sdk';
import { execFramework } from './exec.js';
import { openaiFramework } from './openai.js';
import { scriptFramework } from './script.js';

/** The frameworks bundled into the runner image. */
export function builtinFrameworks(): FrameworkRegistry {
  return new FrameworkRegistry().register(scriptFramework).register(execFramework).register(openaiFramework);
}
