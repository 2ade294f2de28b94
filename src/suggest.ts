// "Did you mean": the known word a mistyped one most likely meant, for the
// command line's flags and actions and the config file's keys.

/** Edit distance (Levenshtein) of two short words. */
export function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++)
      next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length]!;
}

/** The known word a mistyped one most likely meant, if one is close enough. */
export function didYouMean(word: string, known: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = k.startsWith(word) || word.startsWith(k) ? 1 : editDistance(word, k);
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : null;
}

/** "; did you mean X?" when a known word is close, else nothing. */
export const suggestion = (word: string, known: readonly string[], prefix = '') => {
  const near = didYouMean(word, known);
  return near ? `; did you mean ${prefix}${near}?` : '';
};
