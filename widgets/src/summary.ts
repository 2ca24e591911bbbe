/**
 * The one line a collapsed sub-call cell shows: prompt head -> response head, tokens, latency.
 * The kernel's `metadata.rlm.summary` wins; a trajectory saved before kernels wrote one gets the
 * same line built here from `metadata.rlm.call` and the cell's output.
 */
import type * as nbformat from '@jupyterlab/nbformat';
import type { IRlmMeta } from './protocol';

/** Characters kept of the prompt's and the response's head. */
export const PROMPT_HEAD = 48;
export const RESPONSE_HEAD = 32;

/** `text` on one line (whitespace runs folded), cut to `max` characters with an ellipsis. */
export function head(text: string, max: number): string {
  const line = text.replace(/\s+/g, ' ').trim();
  return line.length <= max ? line : `${line.slice(0, max - 1).trimEnd()}…`;
}

/** The text/plain of the first execute_result (a sub-call's response), or null. */
export function responseText(outputs: readonly nbformat.IOutput[]): string | null {
  for (const out of outputs) {
    if (out.output_type === 'execute_result') {
      const text = (out as nbformat.IExecuteResult).data?.['text/plain'];
      if (text !== undefined) {
        return Array.isArray(text) ? text.join('') : String(text);
      }
    }
  }
  return null;
}

/** The summary line of a sub-call cell, or null for cells that are not sub-calls. */
export function subcallSummary(
  meta: IRlmMeta,
  outputs: readonly nbformat.IOutput[]
): string | null {
  if (meta.kind !== 'llm') {
    return null;
  }
  if (typeof meta.summary === 'string' && meta.summary) {
    return head(meta.summary, 400);
  }
  const call = meta.call ?? {};
  const prompt = head(call.prompt_preview ?? '', PROMPT_HEAD) || '(empty prompt)';
  let result: string;
  switch (call.status) {
    case 'queued':
      return `${prompt} → queued`;
    case 'inflight':
      return `${prompt} → in flight`;
    case 'error':
    case 'cancelled':
      result = `[${call.status}]${call.error ? ' ' + head(call.error, RESPONSE_HEAD) : ''}`;
      break;
    default: {
      const text = responseText(outputs);
      result = text === null ? '…' : head(text, RESPONSE_HEAD) || '(empty)';
    }
  }
  const parts = [`${prompt} → ${result}`];
  const usage = call.usage;
  if (usage && (usage.prompt_tokens || usage.completion_tokens)) {
    const tokens = (usage.prompt_tokens ?? 0) + (usage.completion_tokens ?? 0);
    parts.push(`${tokens.toLocaleString('en-US')} tok`);
  }
  if (typeof call.latency_s === 'number' && call.latency_s > 0) {
    parts.push(`${call.latency_s.toFixed(2)} s`);
  }
  return parts.join(' · ');
}

/**
 * `text` as a CSS string literal for a custom property (`content: var(--rlm-summary)`):
 * quotes and backslashes escaped, control characters dropped.
 */
export function cssString(text: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/[\u0000-\u001f\u007f]/g, ' ');
  return `"${clean.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}
