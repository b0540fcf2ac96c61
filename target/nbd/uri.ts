/**
 * NBD URIs (github.com/NetworkBlockDevice/nbd, doc/uri.md), the forms
 * without TLS: `nbd://host[:port]/export` (TCP, port 10809 by default) and
 * `nbd+unix:///export?socket=PATH`. The export name is the path without
 * its first '/', percent-decoded; an empty one is the server's default.
 */
import { isIP } from 'node:net';
import { TargetError } from '../target.js';

export const NBD_DEFAULT_PORT = 10809;

export interface NbdUri {
  /** A unix socket's path, or a host (name or numeric address) and port. */
  to: { path: string } | { host: string; port: number };
  exportName: string;
}

export function parseNbdUri(text: string): NbdUri {
  const bad = (why: string) => new TargetError(`bad NBD URI '${text}': ${why} (nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH)`);
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw bad('not a URI');
  }
  const exportName = decode(u.pathname.replace(/^\//, ''), bad);
  if (u.username !== '' || u.password !== '') throw bad('user names are not supported');
  if (u.hash !== '') throw bad('a fragment (#) means nothing here');
  switch (u.protocol) {
    case 'nbd:':
    case 'nbd+tcp:': {
      if (u.hostname === '') throw bad('no host');
      for (const k of u.searchParams.keys()) throw bad(`unknown query parameter '${k}'`);
      const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
      const port = u.port === '' ? NBD_DEFAULT_PORT : Number(u.port);
      if (!(port > 0 && port < 65536)) throw bad(`port ${u.port}`);
      if (host.includes('%') || (host.includes(':') && isIP(host) !== 6)) throw bad(`host ${host}`);
      return { to: { host, port }, exportName };
    }
    case 'nbd+unix:': {
      if (u.hostname !== '' || u.port !== '') throw bad('a unix socket URI has no host (nbd+unix:///EXPORT?socket=PATH)');
      const path = u.searchParams.get('socket');
      for (const k of u.searchParams.keys()) if (k !== 'socket') throw bad(`unknown query parameter '${k}'`);
      if (path === null || path === '') throw bad('no socket=PATH');
      return { to: { path }, exportName };
    }
    case 'nbds:':
    case 'nbds+tcp:':
    case 'nbds+unix:':
      throw bad('TLS (nbds) is not supported');
    default:
      throw bad(`the scheme is ${u.protocol.slice(0, -1)}, not nbd or nbd+unix`);
  }
}

function decode(s: string, bad: (why: string) => Error): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw bad('a bad %-escape in the export name');
  }
}

/** The URI of `uri`, written back (what `ublk list` shows). */
export function formatNbdUri(uri: NbdUri): string {
  const name = encodeURIComponent(uri.exportName);
  if ('path' in uri.to) return `nbd+unix:///${name}?socket=${uri.to.path}`;
  const host = uri.to.host.includes(':') ? `[${uri.to.host}]` : uri.to.host;
  return `nbd://${host}${uri.to.port === NBD_DEFAULT_PORT ? '' : `:${uri.to.port}`}/${name}`;
}
