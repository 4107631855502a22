export { PreviewError, PreviewErrorCode, httpStatusOf } from './errors.js';
export { PreviewSigner, type Verdict } from './signer.js';
export { previewTargetOf, takeToken, TOKEN_PARAM, type PreviewTarget } from './target.js';
export {
  forwardHttp,
  forwardUpgrade,
  HOP_BY_HOP,
  PreviewProxy,
  refuse,
  refuseUpgrade,
  upstreamHeaders,
  type PreviewDialer,
  type PreviewLimits,
  type PreviewMetrics,
} from './proxy.js';
