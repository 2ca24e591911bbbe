// A stand-in for the one function dspy's Pyodide runner imports from Deno's standard library by URL
// (that host is not a package registry, so it cannot be fetched here): lines of a reader, as strings.
// Written for this benchmark; wired in by an import map (import_map.json), dspy's files untouched.
export async function* readLines(
  reader: { read(p: Uint8Array): Promise<number | null> },
): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  const buf = new Uint8Array(64 * 1024);
  let pending = "";
  while (true) {
    const n = await reader.read(buf);
    if (n === null) break;
    pending += decoder.decode(buf.subarray(0, n), { stream: true });
    let nl: number;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      yield line.endsWith("\r") ? line.slice(0, -1) : line;
    }
  }
  pending += decoder.decode();
  if (pending) yield pending;
}
