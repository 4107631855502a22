import { describe, expect, it } from 'vitest';
import { finishDataOf, outcomeFromAgentFinish, outcomeFromExit, outcomeOfRecord, SIGKILL_EXIT } from '../src/index.js';

describe('outcomeFromExit (the OOM rule)', () => {
  it("trusts the engine's OOMKilled flag, with or without a memory limit", () => {
    for (const memoryLimited of [true, false]) {
      expect(outcomeFromExit({ exitCode: 1, oomKilled: true }, memoryLimited)).toEqual({
        status: 'failed',
        reason: 'oom_killed',
        exitCode: 1,
        message: 'the agent exceeded its memory limit and was killed',
      });
    }
  });

  it('counts SIGKILL under a memory limit as OOM, where the engine never sets the flag', () => {
    expect(SIGKILL_EXIT).toBe(137);
    expect(outcomeFromExit({ exitCode: 137, oomKilled: false }, true).reason).toBe('oom_killed');
  });

  it('does not count SIGKILL without a memory limit as OOM', () => {
    expect(outcomeFromExit({ exitCode: 137, oomKilled: false }, false)).toEqual({
      status: 'failed',
      reason: 'exited_without_finish',
      exitCode: 137,
      message: 'the agent exited with code 137 without reporting FINISH',
    });
  });

  it.each([0, 1, 143, -1])('reports exit %i without FINISH as exited_without_finish', (exitCode) => {
    expect(outcomeFromExit({ exitCode, oomKilled: false }, true)).toMatchObject({
      status: 'failed',
      reason: 'exited_without_finish',
      exitCode,
    });
  });
});

describe('outcomeFromAgentFinish', () => {
  it('takes succeeded, with its message bounded', () => {
    expect(outcomeFromAgentFinish({ status: 'succeeded' })).toEqual({ status: 'succeeded', reason: 'finished' });
    expect(outcomeFromAgentFinish({ status: 'succeeded', message: 'x'.repeat(5000) }).message).toHaveLength(4096);
  });

  it("turns anything else into the agent's failure, never a platform state", () => {
    expect(outcomeFromAgentFinish({ status: 'failed', message: 'no' })).toEqual({ status: 'failed', reason: 'agent_error', message: 'no' });
    expect(outcomeFromAgentFinish({ status: 'timed_out' })).toEqual({
      status: 'failed',
      reason: 'agent_error',
      message: 'the agent reported failure',
    });
    expect(outcomeFromAgentFinish({ status: 'cancelled', message: 7 })).toMatchObject({ reason: 'agent_error' });
  });
});

describe('outcomeOfRecord and finishDataOf', () => {
  it('round-trip a stored decision into FINISH data, leaving out what is null', () => {
    const o = outcomeOfRecord({ status: 'failed', reason: 'oom_killed', message: null, exitCode: 137 }, 'lost');
    expect(o).toEqual({ status: 'failed', reason: 'oom_killed', exitCode: 137 });
    expect(finishDataOf(o)).toEqual({ status: 'failed', reason: 'oom_killed', exitCode: 137 });
    expect(outcomeOfRecord({ status: 'failed', reason: null, message: 'm', exitCode: null }, 'lost')).toEqual({
      status: 'failed',
      reason: 'lost',
      message: 'm',
    });
  });
});
