// bench/README.md upkeep shared by the bench scripts (run.mjs, memory.mjs,
// native.mjs): each rewrites its own part of the file and keeps the others'.
// What the role processes measure, and how they are run, is src/bench/
// (shared with `uds-ipc bench`).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

/**
 * Replaces the part of `file` between the `start` and `end` markers (markers
 * included) with `start + body + end`, or appends it. bench/run.mjs rewrites
 * the rest of bench/README.md and keeps these sections.
 */
export function replaceSection(file, start, end, body) {
  const section = `${start}\n${body.trim()}\n${end}`;
  let text = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmarks\n';
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a >= 0 && b > a) text = text.slice(0, a) + section + text.slice(b + end.length);
  else text = `${text.trimEnd()}\n\n${section}\n`;
  writeFileSync(file, text);
}

/** The sections of `text` between start/end marker pairs (markers included), in order. */
export function keptSections(text, markers) {
  const out = [];
  for (const [start, end] of markers) {
    const a = text.indexOf(start);
    const b = text.indexOf(end);
    if (a >= 0 && b > a) out.push(text.slice(a, b + end.length));
  }
  return out;
}
