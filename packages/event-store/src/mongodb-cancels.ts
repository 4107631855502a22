import type { ChangeStream, Collection, Document } from 'mongodb';
import type { Logger } from '@mgx/config';

/**
 * Cancel requests for one worker's sessions, as a change stream on `sessions`: updates that set
 * `cancelRequested` on an undecided session claimed by `workerId` (the post-image is looked up
 * so the filter can read the worker and the state). A stream that fails is reopened with
 * back-off (0.5 s doubling to 30 s) until the returned stop function is called or `closed()`
 * says the store closed; while it is down the worker's own poll of `cancelRequested` still
 * catches the request.
 */
export function watchCancelRequests<T extends Document>(
  sessions: Collection<T>,
  workerId: string,
  undecided: readonly string[],
  onCancel: (sessionId: string) => void,
  logger: Logger,
  closed: () => boolean,
): () => void {
  const pipeline = [
    {
      $match: {
        operationType: 'update',
        'updateDescription.updatedFields.cancelRequested': true,
        'fullDocument.workerId': workerId,
        'fullDocument.status': { $in: [...undecided] },
      },
    },
    { $project: { documentKey: 1 } },
  ];
  let stream: ChangeStream | undefined;
  let stopped = false;
  let retryMs = 500;
  let timer: NodeJS.Timeout | undefined;

  const open = () => {
    timer = undefined;
    if (stopped || closed()) return;
    let s: ChangeStream;
    try {
      s = sessions.watch<Document>(pipeline, { fullDocument: 'updateLookup' });
    } catch (err) {
      return retry(err);
    }
    stream = s;
    s.on('change', (change) => {
      retryMs = 500;
      const id: unknown = (change as { documentKey?: { _id?: unknown } }).documentKey?._id;
      if (typeof id === 'string') onCancel(id);
    });
    s.on('error', (err) => {
      if (stream === s) stream = undefined;
      void s.close().catch(() => undefined);
      retry(err);
    });
  };
  const retry = (err: unknown) => {
    if (stopped || closed() || timer) return;
    logger.warn({ err, retryMs }, 'session store: the cancel change stream failed; reopening (the monitor poll covers the gap)');
    timer = setTimeout(open, retryMs);
    timer.unref();
    retryMs = Math.min(retryMs * 2, 30_000);
  };

  open();
  return () => {
    stopped = true;
    if (timer) clearTimeout(timer);
    void stream?.close().catch(() => undefined);
    stream = undefined;
  };
}
