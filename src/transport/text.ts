// Remote output arrives in chunks that may end inside a multi-byte character:
// each stream is decoded with one streaming decoder, which holds a partial
// character back until the bytes that complete it arrive.

import { StringDecoder } from 'node:string_decoder';

/** The text of one byte stream, decoded as UTF-8 across chunk boundaries. */
export class StreamText {
  private readonly decoder = new StringDecoder('utf8');
  private collected = '';

  /** keep: how many trailing characters to hold (all by default). */
  constructor(private readonly keep = Infinity) {}

  /** Adds a chunk; returns the text it completes (empty while a character is still split). */
  push(chunk: Buffer): string {
    return this.add(this.decoder.write(chunk));
  }

  /** Ends the stream; returns what was left (a truncated character becomes U+FFFD). */
  end(): string {
    return this.add(this.decoder.end());
  }

  get text(): string {
    return this.collected;
  }

  private add(text: string): string {
    if (text) {
      this.collected += text;
      if (this.collected.length > this.keep) this.collected = this.collected.slice(-this.keep);
    }
    return text;
  }
}

/** Complete lines out of decoded text given in pieces. */
export class Lines {
  private partial = '';

  /** Adds text; returns the lines it completed. */
  push(text: string): string[] {
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    return lines;
  }

  /** What follows the last line break. */
  rest(): string {
    const r = this.partial;
    this.partial = '';
    return r;
  }
}
