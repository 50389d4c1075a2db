// A tokenizer worker of encode-pool.ts: encodes each batch it is sent with the pre-token cache
// and sends the ids back.

import { parentPort, workerData } from 'node:worker_threads';
import type { EncodeReply, EncodeRequest, EncodeWorkerData } from './encode-pool';
import { HfTokenizer } from './tokenizer';

const data = workerData as EncodeWorkerData;
const tokenizer = HfTokenizer.trained(data.json);

parentPort!.on('message', (m: EncodeRequest) => {
  void (async () => {
    try {
      const text = Buffer.from(m.text);
      const texts: Buffer[] = [];
      let from = 0;
      for (const end of m.ends) {
        texts.push(text.subarray(from, end));
        from = end;
      }
      const docs = await tokenizer.encodeBuffers(texts);
      let total = 0;
      for (const d of docs) total += d.length;
      const ids = data.wide ? new Uint32Array(total) : new Uint16Array(total);
      const ends = new Int32Array(docs.length);
      let at = 0;
      docs.forEach((d, i) => {
        ids.set(d, at);
        ends[i] = at += d.length;
      });
      const reply: EncodeReply = { id: m.id, ids, ends };
      parentPort!.postMessage(reply, [ids.buffer as ArrayBuffer, ends.buffer as ArrayBuffer]);
    } catch (e) {
      const reply: EncodeReply = { id: m.id, error: (e as Error).message };
      parentPort!.postMessage(reply);
    }
  })();
});
