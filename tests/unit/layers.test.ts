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
