// A single-node Ceph cluster for a test (tests/ceph/cluster), and the `rbd`
// and `ceph` commands against it.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('../../../tests/ceph/cluster', import.meta.url));

/** Why a cluster cannot run here, or null when it can. */
export function cephMissing(): string | null {
  for (const c of ['ceph-mon', 'ceph-osd', 'rbd']) {
    if (!['/usr/bin', '/usr/sbin'].some((d) => existsSync(`${d}/${c}`))) return `${c} is not installed (tests/host-setup installs ceph)`;
  }
  return null;
}

export class CephCluster {
  readonly conf: string;
  private readonly dir: string;

  private constructor(dir: string, conf: string) {
    this.dir = dir;
    this.conf = conf;
  }

  /** Starts one; its monitor listens on 127.0.0.1:port (msgr2) and port + 1 (msgr1). */
  static start(port: number, base = '/var/tmp'): CephCluster {
    const parent = mkdtempSync(`${base}/ublk-ceph-`);
    const dir = `${parent}/c`;
    try {
      const conf = execFileSync(SCRIPT, ['start', dir, String(port)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
      return new CephCluster(dir, conf);
    } catch (e) {
      CephCluster.stopDir(dir);
      rmSync(parent, { recursive: true, force: true });
      throw new Error(`the Ceph cluster did not start: ${String((e as { stderr?: string }).stderr ?? e).trim()}`);
    }
  }

  private static stopDir(dir: string): void {
    execFileSync(SCRIPT, ['stop', dir], { stdio: 'ignore' });
  }

  stop(): void {
    CephCluster.stopDir(this.dir);
    rmSync(`${this.dir}/..`, { recursive: true, force: true });
  }
  stopOsd(): void {
    execFileSync(SCRIPT, ['stop-osd', this.dir], { stdio: 'ignore' });
  }
  startOsd(): void {
    execFileSync(SCRIPT, ['start-osd', this.dir], { stdio: 'ignore' });
  }

  /** `rbd -c CONF ARGS…`; its stdout. */
  rbd(...args: string[]): string {
    return execFileSync('rbd', ['-c', this.conf, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }
  /** `ceph -c CONF ARGS…`; its stdout. */
  ceph(...args: string[]): string {
    return execFileSync('ceph', ['-c', this.conf, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }
}
