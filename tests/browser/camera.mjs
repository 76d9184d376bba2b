// A fake camera for the browser test: a ticket code drawn as a QR code into the frames of a
// Y4M video, the raw format Chromium plays as a camera with
// --use-file-for-fake-video-capture (it loops the file). Node writes it; no ffmpeg.
//
// The QR code is encoded here with qrcode-generator (npm), independently of the server's
// encoder; `decodeLuma` reads a frame back with the page's own vendored jsQR, so a broken
// frame fails before any browser is involved.

import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import qrcode from 'qrcode-generator';

const require = createRequire(import.meta.url);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Modules of white border around a QR code, as its specification asks. */
const QUIET_ZONE = 4;

/**
 * One grey-scale frame (the Y plane: one byte per pixel, 0 black, 255 white) of
 * `width` × `height`, white, with `text` as a QR code in its middle filling about
 * three quarters of the shorter side; a blank frame when `text` is null.
 */
export function qrFrame(text, width, height) {
  const luma = new Uint8Array(width * height).fill(255);
  if (text === null) return luma;
  const qr = qrcode(0, 'M');
  qr.addData(text, 'Byte');
  qr.make();
  const count = qr.getModuleCount();
  const scale = Math.floor((Math.min(width, height) * 0.75) / (count + 2 * QUIET_ZONE));
  if (scale < 2) throw new Error(`a ${width}x${height} frame is too small for a QR code of ${count} modules`);
  const left = Math.floor((width - count * scale) / 2);
  const top = Math.floor((height - count * scale) / 2);
  for (let row = 0; row < count; row++) {
    for (let col = 0; col < count; col++) {
      if (!qr.isDark(row, col)) continue;
      for (let y = 0; y < scale; y++) {
        luma.fill(0, (top + row * scale + y) * width + left + col * scale, (top + row * scale + y) * width + left + (col + 1) * scale);
      }
    }
  }
  return luma;
}

/**
 * Writes a Y4M file (YUV 4:2:0, progressive) of `width` × `height` at `fps` frames a second:
 * each of `scenes` is `{ luma, frames }`, a grey-scale picture shown for that many frames.
 * Grey needs no colour: both chroma planes are the neutral 128.
 */
export function writeY4m(file, { width, height, fps }, scenes) {
  if (width % 2 !== 0 || height % 2 !== 0) throw new Error('4:2:0 needs an even width and height');
  const chroma = Buffer.alloc((width / 2) * (height / 2) * 2, 128);
  const frameHeader = Buffer.from('FRAME\n');
  const parts = [Buffer.from(`YUV4MPEG2 W${width} H${height} F${fps}:1 Ip A1:1 C420jpeg\n`)];
  for (const { luma, frames } of scenes) {
    if (luma.length !== width * height) throw new Error('a scene of the wrong size');
    for (let i = 0; i < frames; i++) parts.push(frameHeader, Buffer.from(luma.buffer, luma.byteOffset, luma.length), chroma);
  }
  fs.writeFileSync(file, Buffer.concat(parts));
}

/** The text of the QR code in a grey-scale frame, as the page's jsQR reads it; null if none. */
export function decodeLuma(luma, width, height) {
  const jsQR = require(path.join(ROOT, 'web', 'vendor', 'jsQR.js'));
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < luma.length; i++) {
    rgba[i * 4] = rgba[i * 4 + 1] = rgba[i * 4 + 2] = luma[i];
    rgba[i * 4 + 3] = 255;
  }
  return jsQR(rgba, width, height)?.data ?? null;
}
