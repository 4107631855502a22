import { FrameworkRegistry } from '@mgx/agent-sdk';
import { scriptFramework } from './script.js';

/** The frameworks bundled into the runner image. */
export function builtinFrameworks(): FrameworkRegistry {
  return new FrameworkRegistry().register(scriptFramework);
}
