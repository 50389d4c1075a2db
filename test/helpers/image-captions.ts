// A seeded image-captions corpus with a learnable relation between the features and the caption:
// each example is one of 8 classes, its features the class's prototype vectors plus noise, its
// caption the class's word and a full stop. A text-only model can at best learn the word list and
// the class frequencies, so its caption loss is at least the entropy of the class, spread over the
// caption's tokens (`textOnlyFloor`); a model that reads the image can go below it.

import * as fs from 'node:fs';
import { mulberry32 } from '../../engine/models/blocks';

/** Distinct first letters: after the start token, the first byte names the class. */
export const CAPTION_WORDS = ['apple', 'boat', 'cat', 'dog', 'eagle', 'fish', 'goat', 'house'];

export interface CaptionExample {
  features: number[];
  caption: string;
  cls: number;
}

/** `n` examples of `imageTokens` × `imageDim` features, seeded. */
export function imageCaptionExamples(n: number, imageTokens: number, imageDim: number, seed = 1, noise = 0.5): CaptionExample[] {
  const r = mulberry32(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const protos = CAPTION_WORDS.map(() => Array.from({ length: imageTokens * imageDim }, gauss));
  return Array.from({ length: n }, () => {
    const cls = Math.floor(r() * CAPTION_WORDS.length);
    return { cls, caption: `${CAPTION_WORDS[cls]}.`, features: protos[cls].map((v) => Number((v + noise * gauss()).toFixed(5))) };
  });
}

/** Writes examples as the jsonl an image-captions corpus reads (features as imageTokens arrays of imageDim). */
export function writeImageCaptions(file: string, examples: CaptionExample[], imageDim: number): void {
  const lines = examples.map((e) => JSON.stringify({ features: Array.from({ length: e.features.length / imageDim }, (_, i) => e.features.slice(i * imageDim, (i + 1) * imageDim)), caption: e.caption }));
  fs.writeFileSync(file, lines.join('\n') + '\n');
}

/**
 * The least mean caption-token loss (nats per scored token: the caption's tokens and its
 * end-of-text) any model that does not see the image can reach on these captions: the entropy of
 * their frequencies per caption (Gibbs' inequality), over the tokens scored. `tokens` counts a
 * caption's tokens without its end-of-text.
 */
export function textOnlyFloor(captions: string[], tokens: (caption: string) => number): number {
  const counts = new Map<string, number>();
  for (const c of captions) counts.set(c, (counts.get(c) ?? 0) + 1);
  const n = captions.length;
  let entropy = 0;
  for (const c of counts.values()) entropy -= (c / n) * Math.log(c / n);
  const scored = captions.reduce((t, c) => t + tokens(c) + 1, 0);
  return (n * entropy) / scored;
}
