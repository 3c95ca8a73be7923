import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';

/**
 * The file operations that evidence providers perform on a TEE interface (configfs-tsm or
 * Gramine's `/dev/attestation`). The kernel or Gramine computes a report as a side effect of these
 * calls. Tests pass an emulator that performs the same calls on real files in a temporary
 * directory and then applies the side effects that the kernel or Gramine would.
 */
export interface TeeFilesystem {
  mkdir(path: string): Promise<void>;
  rmdir(path: string): Promise<void>;
  readFile(path: string): Promise<Buffer>;
  writeFile(path: string, data: Uint8Array): Promise<void>;
}

/** The host's real filesystem. */
export const hostFilesystem: TeeFilesystem = {
  mkdir: async (path) => {
    await mkdir(path);
  },
  rmdir: (path) => rmdir(path),
  readFile: (path) => readFile(path),
  writeFile: (path, data) => writeFile(path, data),
};

/** Returns the errno code of a failed file operation, such as `ENOENT`. */
export function errnoCode(error: unknown): string | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}
