/** The run bar's status text and a sub-call's one-line summary. */
import { describe, expect, it } from 'vitest';
import type { IRlmMeta, IStatus } from '../src/protocol';
import type { IRunState } from '../src/runs';
import { formatStatus, reasonText } from '../src/statustext';
import { cssString, head, subcallSummary } from '../src/summary';

const STATUS: IStatus = {
  state: 'running',
  step: 2,
  max_steps: 8,
  subcalls: { done: 0, queued: 16, inflight: 16, failed: 0, cancelled: 0 },
  tokens: 12345,
  cost_usd: 0.0123,
  elapsed_s: 3.2,
  reason: null
};

function run(extra: Partial<IRunState> = {}): IRunState {
  return {
    run: 'r1',
    anchor: 'q',
    status: STATUS,
    statusAt: 0,
    finish: null,
    pending: null,
    ...extra
  };
}

describe('formatStatus', () => {
  it('tells queued calls from calls in flight', () => {
    const { line } = formatStatus(run(), 0);
    expect(line).toContain('0 done · 16 in flight · 16 queued');
    expect(line).not.toContain('failed');
  });

  it('shows a stop as cancelled calls and one clear reason', () => {
    const stopped: IStatus = {
      ...STATUS,
      state: 'stopped',
      subcalls: { done: 4, queued: 0, inflight: 0, failed: 0, cancelled: 12 }
    };
    const r = run({
      status: stopped,
      finish: {
        type: 'finish',
        run: 'r1',
        outcome: 'stopped',
        answer: null,
        reason: 'stopped: interrupted during step 2'
      }
    });
    const { line, full } = formatStatus(r, 0);
    expect(line).toMatch(/^RLM stopped · /);
    expect(line).toContain('12 cancelled');
    expect(line).not.toContain('failed');
    expect(line.match(/stopped/g)).toHaveLength(1);
    expect(full).toContain('why: interrupted during step 2');
  });

  it('puts the whole status, with the step-mode hint, in the full text', () => {
    const paused: IStatus = {
      ...STATUS,
      state: 'paused',
      reason: 'step mode: step 2 is proposed, not run'
    };
    const { full } = formatStatus(run({ status: paused }), 0);
    expect(full.split('\n')).toEqual([
      'RLM run r1: paused',
      'step 2 of at most 8',
      'sub-calls: 0 done, 16 in flight, 16 queued, 0 failed, 0 cancelled',
      '12,345 tok, $0.0123',
      '3.2 s active (time paused is not counted)',
      'why: step mode: step 2 is proposed, not run'
    ]);
  });

  it('ticks elapsed time between status messages while the run is live', () => {
    expect(formatStatus(run({ statusAt: 1000 }), 3000).line).toContain('5.2 s');
  });

  it('drops an outcome the reason repeats', () => {
    expect(reasonText('stopped', '(stopped): stopped: interrupted')).toBe('stopped: interrupted');
    expect(reasonText('stopped', 'Stopped: interrupted during step 2')).toBe(
      'interrupted during step 2'
    );
    expect(reasonText('error', null)).toBeNull();
  });
});

describe('subcallSummary', () => {
  const call = (extra: Partial<NonNullable<IRlmMeta['call']>> = {}): IRlmMeta => ({
    kind: 'llm',
    call: {
      status: 'ok',
      prompt_preview:
        'Count the lines\n  of the text below that mention ERROR, then answer with a number only',
      usage: { prompt_tokens: 400, completion_tokens: 12 },
      latency_s: 0.25,
      ...extra
    }
  });
  const result = [
    {
      output_type: 'execute_result',
      data: { 'text/plain': '13' },
      metadata: {},
      execution_count: null
    }
  ];

  it("prefers the kernel's summary", () => {
    expect(subcallSummary({ ...call(), summary: 'given → 1 · 2 tok · 0.10 s' }, result)).toBe(
      'given → 1 · 2 tok · 0.10 s'
    );
  });

  it('builds prompt head -> response head, tokens, latency from the record', () => {
    expect(subcallSummary(call(), result)).toBe(
      'Count the lines of the text below that mention… → 13 · 412 tok · 0.25 s'
    );
  });

  it('says when a call is queued, in flight, failed or cancelled', () => {
    expect(subcallSummary(call({ status: 'queued' }), [])).toMatch(/→ queued$/);
    expect(subcallSummary(call({ status: 'inflight' }), [])).toMatch(/→ in flight$/);
    expect(subcallSummary(call({ status: 'cancelled', error: 'run stopped' }), [])).toContain(
      '→ [cancelled] run stopped'
    );
    expect(subcallSummary({ kind: 'step' }, [])).toBeNull();
  });

  it('escapes the line for a CSS string', () => {
    expect(cssString('a "b" \\ c\nd')).toBe('"a \\"b\\" \\\\ c d"');
    expect(head('  many   spaces\n', 20)).toBe('many spaces');
  });
});
