export { WorkspaceFiles, contentTypeOf } from './workspace-files.js';
export type {
  FileEntry,
  FileLimits,
  ListOptions,
  OpenedFile,
  ReadResult,
  UploadResult,
  Usage,
  WorkspaceFilesOptions,
  WriteResult,
} from './workspace-files.js';
export type { EntryType } from './safe-fs.js';
export { FilesError, FilesErrorCode } from './errors.js';
export { parsePath, namesFromUrl, checkWorkspaceId, joinNames } from './paths.js';
