// Hand-made tar archives for tests of what a host accepts: any member type,
// mode, owner and name, nothing read from disk (node-tar's header encoder).
import { Header, type HeaderData } from 'tar';

export interface Member extends HeaderData {
  body?: string;
}

/** An uncompressed tar archive of exactly these members, in this order. */
export function tarOf(members: Member[]): Buffer {
  const blocks: Buffer[] = [];
  for (const { body = '', ...m } of members) {
    const data = Buffer.from(body);
    const type = m.type ?? 'File';
    const h = new Header({ mode: 0o644, uid: 0, gid: 0, mtime: new Date(), ...m, type, size: data.length });
    h.encode();
    blocks.push(h.block!, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}
