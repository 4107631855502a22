import { CodedError } from '@mgx/config';

/** Error codes of @mgx/workspaces, one table. */
export const FilesErrorCode = {
  /** A path or id that is not a plain relative path inside the workspace. */
  INVALID_PATH: 'FILES_INVALID_PATH',
  NOT_FOUND: 'FILES_NOT_FOUND',
  /** A file was asked for and the path is a directory, or the other way round. */
  WRONG_TYPE: 'FILES_WRONG_TYPE',
  /** What is there is not served: a symlink, a FIFO, a device, a socket, a hardlinked file. */
  REFUSED: 'FILES_REFUSED',
  /** A file or upload over its limit (MGX_MAX_FILE_BYTES, MGX_MAX_UPLOAD_BYTES, MGX_MAX_UPLOAD_FILES). */
  TOO_LARGE: 'FILES_TOO_LARGE',
  /** The write would take the workspace over MGX_WORKSPACE_QUOTA_BYTES. */
  QUOTA_EXCEEDED: 'FILES_QUOTA_EXCEEDED',
  /** An upload that is not a gzip-compressed tar, or holds what is not accepted. */
  BAD_ARCHIVE: 'FILES_BAD_ARCHIVE',
  /** A range outside the file. */
  BAD_RANGE: 'FILES_BAD_RANGE',
  /** A directory that is not empty, deleted without `recursive`. */
  NOT_EMPTY: 'FILES_NOT_EMPTY',
} as const;
export type FilesErrorCode = (typeof FilesErrorCode)[keyof typeof FilesErrorCode];

export class FilesError extends CodedError<FilesErrorCode> {
  override readonly name = 'FilesError';
}
