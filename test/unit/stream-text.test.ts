// Remote output is decoded across chunk boundaries: a character split between
// two chunks arrives whole (the transport's StreamText, fed as ssh2 feeds it).
import { Lines, StreamText } from '../../src/transport/text.js';

const SAMPLE = 'café 日本 🚀 done\nsecond line é\n';

/** The sample's bytes cut at every position, and one byte at a time. */
const splits: [string, Buffer[]][] = [
  ['one byte at a time', [...Buffer.from(SAMPLE)].map((b) => Buffer.from([b]))],
  ...Array.from({ length: Buffer.byteLength(SAMPLE) - 1 }, (_, i): [string, Buffer[]] => {
    const bytes = Buffer.from(SAMPLE);
    return [`cut at byte ${i + 1}`, [bytes.subarray(0, i + 1), bytes.subarray(i + 1)]];
  }),
];

test.each(splits)('text cut %s is decoded intact', (_, chunks) => {
  const s = new StreamText();
  const lines = new Lines();
  const seen: string[] = [];
  for (const c of chunks) seen.push(...lines.push(s.push(c)));
  seen.push(...lines.push(s.end()));
  expect(s.text).toBe(SAMPLE);
  expect(s.text).not.toContain('\ufffd');
  expect(seen).toEqual(['café 日本 🚀 done', 'second line é']);
  expect(lines.rest()).toBe('');
});

test('a character still split when the stream ends becomes one replacement character', () => {
  const s = new StreamText();
  s.push(Buffer.from('ok '));
  s.push(Buffer.from('日').subarray(0, 2));
  expect(s.end()).toBe('\ufffd');
  expect(s.text).toBe('ok \ufffd');
});

test('a bounded stream keeps its tail', () => {
  const s = new StreamText(5);
  s.push(Buffer.from('abcdefgh'));
  expect(s.text).toBe('defgh');
});

test('a line without a final break is left as the rest', () => {
  const lines = new Lines();
  expect(lines.push('a\nb')).toEqual(['a']);
  expect(lines.push('c\n\nd')).toEqual(['bc', '']);
  expect(lines.rest()).toBe('d');
});
