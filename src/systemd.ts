/**
 * systemd integration: socket activation (sd_listen_fds semantics) and
 * sd_notify-style state messages. No dependency on libsystemd.
 * @internal
 */
import { binding } from './binding';
import { IpcError } from './errors';

/** First passed fd (SD_LISTEN_FDS_START). */
const LISTEN_FDS_START = 3;

interface Passed {
  fd: number;
  name: string;
}

// Parsed once per thread (environment variables are removed afterwards, as
// sd_listen_fds(1) does); fds are handed out at most once.
let passed: Passed[] | undefined;

function parse(): Passed[] {
  if (passed) return passed;
  passed = [];
  const env = process.env;
  if (env.LISTEN_PID === undefined || Number(env.LISTEN_PID) !== process.pid) return passed;
  const count = Number(env.LISTEN_FDS);
  const names = (env.LISTEN_FDNAMES ?? '').split(':');
  if (Number.isInteger(count) && count > 0) {
    for (let i = 0; i < count; i++) passed.push({ fd: LISTEN_FDS_START + i, name: names[i] || 'unknown' });
  }
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  delete env.LISTEN_PIDFDID;
  return passed;
}

/** The listening sockets systemd passed to this process and nobody took yet. */
export function availableListeners(): ReadonlyArray<Readonly<Passed>> {
  return parse();
}

/**
 * Picks the listener for a Reader: the one named `name` if given (error if
 * there is none), else the one bound to `path`, else the only one. Returns
 * undefined when systemd passed nothing usable for this Reader. The fd is
 * checked (AF_UNIX, SOCK_STREAM, listening) and claimed.
 */
export function takeListener(path: string, name: string | undefined): number | undefined {
  const list = parse();
  let i = -1;
  if (name !== undefined) {
    i = list.findIndex((p) => p.name === name);
    if (i < 0) {
      throw new IpcError(
        'ERR_SYSTEMD',
        `systemd passed no socket named "${name}" (LISTEN_FDNAMES had: ${list.map((p) => p.name).join(', ') || 'none'})`,
      );
    }
  } else if (list.length > 0) {
    i = list.findIndex((p) => binding().boundPath(p.fd) === path);
    if (i < 0 && list.length === 1) i = 0;
  }
  if (i < 0) return undefined;
  const { fd, name: fdName } = list[i];
  const bad = binding().checkListeningFd(fd);
  if (bad) {
    throw new IpcError('ERR_SYSTEMD', `the socket systemd passed as fd ${fd} ("${fdName}") cannot be used: ${bad.message}`);
  }
  list.splice(i, 1);
  return fd;
}

/** Sends a state string (e.g. "READY=1") to $NOTIFY_SOCKET if it is set. Returns false if unset. */
export function notify(state: string): boolean {
  const address = process.env.NOTIFY_SOCKET;
  if (!address) return false;
  const errno = binding().notifyDatagram(address, state);
  if (errno !== 0) throw new IpcError('ERR_SYSTEMD', `cannot notify systemd at ${address}: errno ${errno}`, { errno, syscall: 'sendto' });
  return true;
}
