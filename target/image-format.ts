/**
 * Disk image formats the loop target must not serve as raw bytes: a guest
 * would see the container (headers, tables) instead of the disk in it, and
 * a write would corrupt the image. Recognised by the signatures qemu's
 * probes use (block/qcow2.c, vmdk.c, vhdx.c, vdi.c, qed.c, vpc.c), all in
 * the first 4 KiB.
 */

/** Bytes probe() looks at: every signature below lies within them. */
export const PROBE_BYTES = 4096;

interface Signature {
  name: string;
  offset: number;
  /** Bytes, or text (latin1). */
  magic: string;
  /** What to do instead of serving it raw. */
  hint: string;
}

const CONVERT = 'convert it with qemu-img convert -O raw';

const SIGNATURES: readonly Signature[] = [
  // qcow (version 1) and qcow2 share the magic; the version follows it.
  { name: 'qcow2', offset: 0, magic: 'QFI\xfb', hint: 'use -t qcow2' },
  { name: 'QED', offset: 0, magic: 'QED\0', hint: CONVERT },
  { name: 'VMDK', offset: 0, magic: 'KDMV', hint: CONVERT },
  { name: 'VMDK', offset: 0, magic: 'COWD', hint: CONVERT },
  // A VMDK descriptor names its extents: serve the flat extent it names.
  { name: 'VMDK descriptor', offset: 0, magic: '# Disk DescriptorFile', hint: 'serve the extent file it names' },
  { name: 'VHDX', offset: 0, magic: 'vhdxfile', hint: CONVERT },
  // A dynamic VHD starts with a copy of its footer; a fixed one is raw data with a footer at the end.
  { name: 'VHD', offset: 0, magic: 'conectix', hint: CONVERT },
  // VirtualBox: the u32 0xbeda107f, little-endian, after a 64-byte text banner.
  { name: 'VDI', offset: 64, magic: '\x7f\x10\xda\xbe', hint: CONVERT },
];

export interface ImageFormat {
  name: string;
  hint: string;
}

/** The image format `head` (the first PROBE_BYTES of a file, or fewer) starts with; null when none. */
export function probe(head: Uint8Array): ImageFormat | null {
  for (const s of SIGNATURES) {
    if (head.length < s.offset + s.magic.length) continue;
    let match = true;
    for (let i = 0; i < s.magic.length && match; i++) match = head[s.offset + i] === s.magic.charCodeAt(i);
    if (!match) continue;
    if (s.name === 'qcow2' && head[7] === 1 && head[4] + head[5] + head[6] === 0) return { name: 'qcow', hint: CONVERT };
    return { name: s.name, hint: s.hint };
  }
  return null;
}
