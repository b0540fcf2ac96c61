/**
 * Targets by name. A target module's default export is its Target; the
 * worker threads load the same module, so a target is named by a module
 * URL that both the daemon and its workers can import.
 */
import { pathToFileURL } from 'node:url';
import { isAbsolute, resolve } from 'node:path';
import { type Target, TargetError } from './target.js';

export const BUILTIN_TARGETS: Readonly<Record<string, string>> = {
  null: new URL('./null.js', import.meta.url).href,
  mem: new URL('./mem.js', import.meta.url).href,
  loop: new URL('./loop/index.js', import.meta.url).href,
  qcow2: new URL('./qcow2/index.js', import.meta.url).href,
  nbd: new URL('./nbd/index.js', import.meta.url).href,
  rbd: new URL('./rbd/index.js', import.meta.url).href,
};

/** A built-in name ('loop'), a module path or a file: URL → the module URL to import. */
export function targetModuleUrl(ref: string): string {
  if (Object.hasOwn(BUILTIN_TARGETS, ref)) return BUILTIN_TARGETS[ref];
  if (ref.startsWith('file:')) return ref;
  if (ref.includes('/') || ref.endsWith('.js')) return pathToFileURL(isAbsolute(ref) ? ref : resolve(ref)).href;
  throw new TargetError(`unknown target '${ref}' (built-in: ${Object.keys(BUILTIN_TARGETS).join(', ')})`);
}

export async function loadTarget(moduleUrl: string): Promise<Target<never>> {
  let mod: { default?: Target<never> };
  try {
    mod = (await import(moduleUrl)) as { default?: Target<never> };
  } catch (e) {
    throw new TargetError(`cannot load target module ${moduleUrl}: ${(e as Error).message}`);
  }
  const t = mod.default;
  if (!t || typeof t.open !== 'function' || typeof t.createQueue !== 'function') {
    throw new TargetError(`${moduleUrl} does not export a target (default export with open() and createQueue())`);
  }
  return t;
}
