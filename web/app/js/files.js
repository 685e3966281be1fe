// Attachments (docs/protocol.md §13): uploads with progress, and the files' bytes as blob:
// URLs. The API takes the token in a header only, so an <img> cannot load /v1/files/N by
// itself: the bytes are fetched with the token and shown from a blob: URL (CSP img-src blob:).

/** @typedef {{id: number, name: string, size: number, content_type: string, width?: number,
 *   height?: number, thumbnail: boolean}} FileInfo */

export const THUMBNAIL_PX = 320; // the longer side of a thumbnail (the server's attachments.py)

/** "2.4 MB", "812 KB", "97 B". @param {number} bytes */
export function sizeText(bytes) {
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  if (bytes >= 1e3) return `${Math.round(bytes / 1e3)} KB`;
  return `${bytes} B`;
}

/** The size a thumbnail is shown at, known before it loads (no layout jump).
 * @param {FileInfo} file @returns {{width: number, height: number}|null} */
export function thumbSize(file) {
  if (!file.thumbnail || !file.width || !file.height) return null;
  const scale = Math.min(1, THUMBNAIL_PX / Math.max(file.width, file.height));
  return { width: Math.max(1, Math.round(file.width * scale)), height: Math.max(1, Math.round(file.height * scale)) };
}

/**
 * Upload one file; `progress` gets the fraction sent (XMLHttpRequest: fetch cannot tell).
 * @param {string} token @param {File|Blob} file @param {string} name
 * @param {(fraction: number) => void} progress
 * @returns {Promise<FileInfo>} rejects with an Error whose message says why
 */
export function upload(token, file, name, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/v1/files?name=${encodeURIComponent(name)}`);
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) progress(event.loaded / event.total);
    };
    xhr.onload = () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = null;
      }
      if (xhr.status === 201 && data) resolve(data.file);
      else if (data && data.error && data.error.code === "too_large") reject(new Error(`Too large: ${data.error.message}`));
      else reject(new Error(data && data.error ? data.error.message : `The server answered ${xhr.status}`));
    };
    xhr.onerror = () => reject(new Error("Cannot reach the server"));
    xhr.send(file);
  });
}

/** blob: URLs by path, fetched once per page.
 * @type {Map<string, Promise<string>>} */
const urls = new Map();

/** A blob: URL for a file or its thumbnail. @param {string} token @param {number} id @param {boolean} thumbnail */
export function blobUrl(token, id, thumbnail) {
  const path = `/v1/files/${id}${thumbnail ? "/thumbnail" : ""}`;
  let url = urls.get(path);
  if (!url) {
    url = fetch(path, { headers: { Authorization: `Bearer ${token}` } }).then(async (response) => {
      if (!response.ok) throw new Error(`file ${id}: ${response.status}`);
      return URL.createObjectURL(await response.blob());
    });
    url.catch(() => urls.delete(path));
    urls.set(path, url);
  }
  return url;
}

/** Save a file under its name (a download, never opened on this origin).
 * @param {string} token @param {FileInfo} file */
export async function save(token, file) {
  const link = document.createElement("a");
  link.href = await blobUrl(token, file.id, false);
  link.download = file.name;
  link.click();
}
