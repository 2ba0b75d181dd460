/**
 * What every command of the `uds-ipc` tool shares: exit codes, the two kinds
 * of failure, output, and argument parsing that turns mistakes into usage
 * errors.
 */
import { getSystemErrorName, parseArgs } from 'node:util';

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;

/** A command-line mistake: printed with a hint to --help, exit status 2. */
export class UsageError extends Error {}

/** A runtime failure: printed as "uds-ipc <command>: <CODE>: <message>", exit status 1. */
export class CliError extends Error {
  constructor(
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

export function out(s: string): void {
  process.stdout.write(s);
}

export function err(s: string): void {
  process.stderr.write(s.endsWith('\n') ? s : s + '\n');
}

/** parseArgs, turning its errors (unknown option, missing value...) into usage errors. */
export function parse<O extends Record<string, { type: 'string' | 'boolean'; short?: string }>>(
  cmd: string,
  args: string[],
  options: O,
): { values: { [K in keyof O]?: O[K]['type'] extends 'string' ? string : boolean }; positionals: string[] } {
  try {
    const r = parseArgs({ args, options, allowPositionals: true, strict: true });
    return r as unknown as ReturnType<typeof parse<O>>;
  } catch (e) {
    // Node's messages may span lines; a usage error is one line.
    throw new UsageError(`${cmd}: ${(e as Error).message.replace(/\s*\n\s*/g, ' ')}`);
  }
}

export function positiveInt(cmd: string, name: string, s: string, max = Number.MAX_SAFE_INTEGER): number {
  const n = /^\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > max) {
    throw new UsageError(`${cmd}: invalid value for ${name}: '${s}' (expected an integer from 1 to ${max})`);
  }
  return n;
}

export function choice<T extends string>(cmd: string, name: string, s: string | undefined, allowed: readonly T[], def: T): T {
  if (s === undefined) return def;
  if (!(allowed as readonly string[]).includes(s)) {
    throw new UsageError(`${cmd}: invalid value for ${name}: '${s}' (expected ${allowed.join(', ')})`);
  }
  return s as T;
}

export function onePath(cmd: string, positionals: string[]): string {
  if (positionals.length === 0) throw new UsageError(`${cmd}: missing <path>`);
  if (positionals.length > 1) throw new UsageError(`${cmd}: unexpected argument '${positionals[1]}'`);
  return positionals[0];
}

/**
 * Bad arguments found by the Reader/Writer constructors (an invalid or too long
 * path) are usage errors; anything else (e.g. ERR_ADDON_LOAD) is a runtime error.
 */
export function constructing<T>(cmd: string, make: () => T): T {
  try {
    return make();
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (e instanceof TypeError || e instanceof RangeError || code === 'ERR_PATH_TOO_LONG') {
      throw new UsageError(`${cmd}: ${typeof code === 'string' ? code + ': ' : ''}${(e as Error).message}`);
    }
    throw e;
  }
}

/** "connect failed: No such file or directory (ENOENT)" from an IpcError with errno. */
export function describeError(e: unknown): string {
  const x = e as { message?: string; errno?: number; code?: string };
  let s = x?.message ?? String(e);
  if (typeof x?.errno === 'number' && x.errno > 0) {
    try {
      s += ` (${getSystemErrorName(-x.errno)})`;
    } catch {
      // unknown errno: leave it out
    }
  }
  return s;
}

/** Decodes hex digits (ASCII whitespace ignored); undefined if not valid hex. */
export function fromHex(s: string): Buffer | undefined {
  const t = s.replace(/[ \t\r\n\f\v]+/g, '');
  if (t.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(t)) return undefined;
  return Buffer.from(t, 'hex');
}
