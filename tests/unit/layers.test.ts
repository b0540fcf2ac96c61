// The layers import one way, sys -> aio -> target -> ublk -> tools (docs/design.md):
// no module imports from a folder after its own.
import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { ROOT } from '../lib/ublk.js';

const LAYERS = ['sys', 'aio', 'target', 'ublk', 'tools'];

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

t.test('no layer imports from a layer above it', async (t) => {
  const upward: string[] = [];
  let imports = 0;
  for (const layer of LAYERS) {
    for (const file of sources(join(ROOT, layer))) {
      for (const m of readFileSync(file, 'utf8').matchAll(/^(?:import|export)\b[^;]*?from '(\.[^']+)'/gms)) {
        imports++;
        const target = relative(ROOT, resolve(dirname(file), m[1])).split('/')[0];
        if (LAYERS.indexOf(target) > LAYERS.indexOf(layer)) upward.push(`${relative(ROOT, file)} imports ${m[1]}`);
      }
    }
  }
  t.ok(imports > 100, `read ${imports} relative imports`);
  t.same(upward, [], 'every import points down or sideways');
});

t.test('koffi is loaded by sys/native.ts alone', async (t) => {
  const loaders = LAYERS.flatMap((l) => sources(join(ROOT, l))).filter((f) => /\(['"]koffi['"]\)|from 'koffi'/.test(readFileSync(f, 'utf8')));
  t.same(loaders.map((f) => relative(ROOT, f)), ['sys/native.ts']);
});

/**
 * The modules `entries` load when they start, relative to ROOT, and the
 * packages among them: static imports only (a dynamic import() loads when it
 * runs), and type-only imports are erased from the JavaScript.
 */
function startupGraph(...entries: string[]): { files: string[]; packages: string[] } {
  const seen = new Set<string>();
  const packages = new Set<string>();
  const walk = (file: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(/^(?:import|export)\s+(?!type\s)[^;]*?from '([^']+)'/gms)) {
      if (m[1].startsWith('.')) walk(resolve(dirname(file), m[1].replace(/\.js$/, '.ts')));
      else packages.add(m[1]);
    }
  };
  for (const e of entries) walk(join(ROOT, e));
  return { files: [...seen].map((f) => relative(ROOT, f)), packages: [...packages] };
}

t.test('ublk list loads none of add\'s modules (a short command starts in its module loading)', async (t) => {
  const loaded = startupGraph('tools/commands/list.ts').files;
  t.ok(loaded.includes('tools/config-dir.ts'), 'list reads the saved names');
  t.same(
    loaded.filter((f) => ['tools/commands/add.ts', 'tools/saved.ts', 'target/registry.ts', 'target/size.ts'].includes(f)),
    [],
    'not add, saved-device checking, the target registry or the size parser',
  );
});

t.test('the daemon starts its queue threads before loading its own modules, and loads no command-line parser', async (t) => {
  const entry = startupGraph('tools/ublk-daemon.ts');
  t.same(entry.files.sort(), ['tools/jit.ts', 'tools/ublk-daemon.ts', 'ublk/spare-workers.ts'], 'the entry loads the spare workers and the V8 setting alone, then daemon.ts');
  t.same(entry.packages.filter((p) => !p.startsWith('node:')), [], 'and no package');
  const daemon = startupGraph('tools/daemon.ts');
  t.ok(daemon.files.includes('ublk/queue-pool.ts'), 'daemon.ts loads the device and its queue pool');
  // koffi comes through sys/native.ts's require(), not an import.
  t.same(daemon.packages.filter((p) => !p.startsWith('node:')), [], 'no package imported: not commander, the CLI\'s parser');
});
