// The proof-of-work solver (rooms[].proof_of_work; docs/security.md, "Proof of work"): finds the
// nonce that makes SHA-256(SHA-256(challenge) || uint32_be(nonce)) start with `difficulty` zero
// bits. Sent only with a page that carries a challenge, before the page script, which calls
// window.waitroom.solve(challenge, difficulty, done).
//
// Plain JavaScript, not Web Crypto: one digest per promise makes crypto.subtle about 9 times
// slower for 36-byte messages (measured in Chromium: docs/security.md), and it is missing on
// plain-http pages. Where the browser has it, Web Crypto checks this code's first digests once
// (a wrong engine would solve nothing); on a mismatch the search runs on Web Crypto instead.
(function () {
  "use strict";
  var K = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ];
  var IV = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
  var W = new Int32Array(64);

  // One SHA-256 compression of the block in W[0..15] onto the state H (8 words), in place.
  function compress(H) {
    var i, x, y;
    for (i = 16; i < 64; i++) {
      x = W[i - 15]; y = W[i - 2];
      W[i] = (W[i - 16] + ((x >>> 7 | x << 25) ^ (x >>> 18 | x << 14) ^ (x >>> 3)) + W[i - 7]
        + ((y >>> 17 | y << 15) ^ (y >>> 19 | y << 13) ^ (y >>> 10))) | 0;
    }
    var a = H[0], b = H[1], c = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7], t1, t2;
    for (i = 0; i < 64; i++) {
      t1 = (h + ((e >>> 6 | e << 26) ^ (e >>> 11 | e << 21) ^ (e >>> 25 | e << 7))
        + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
      t2 = (((a >>> 2 | a << 30) ^ (a >>> 13 | a << 19) ^ (a >>> 22 | a << 10))
        + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    H[0] = (H[0] + a) | 0; H[1] = (H[1] + b) | 0; H[2] = (H[2] + c) | 0; H[3] = (H[3] + d) | 0;
    H[4] = (H[4] + e) | 0; H[5] = (H[5] + f) | 0; H[6] = (H[6] + g) | 0; H[7] = (H[7] + h) | 0;
  }

  // SHA-256 of a byte array, as 8 words.
  function sha256(bytes) {
    var H = IV.slice(), n = bytes.length, blocks = Math.ceil((n + 9) / 64), i, j, k;
    for (i = 0; i < blocks; i++) {
      for (j = 0; j < 16; j++) {
        var word = 0;
        for (k = 0; k < 4; k++) {
          var at = i * 64 + j * 4 + k;
          word = word << 8 | (at < n ? bytes[at] : at === n ? 0x80 : 0);
        }
        W[j] = word;
      }
      if (i === blocks - 1) { W[14] = Math.floor(n / 0x20000000); W[15] = n * 8 | 0; }
      compress(H);
    }
    return H;
  }

  // SHA-256(seed || uint32_be(nonce)): one block (36 bytes, then the padding).
  function digest(seed, nonce) {
    for (var j = 0; j < 8; j++) W[j] = seed[j];
    W[8] = nonce | 0; W[9] = 0x80000000 | 0;
    W[10] = 0; W[11] = 0; W[12] = 0; W[13] = 0; W[14] = 0; W[15] = 288;
    var H = IV.slice();
    compress(H);
    return H;
  }

  function bytesOf(text) {
    var out = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
    return out;
  }
  function wordsOf(buffer) {
    var view = new DataView(buffer), out = [];
    for (var i = 0; i < 8; i++) out.push(view.getInt32(i * 4));
    return out;
  }
  function preimage(seed, nonce) {
    var view = new DataView(new ArrayBuffer(36));
    for (var i = 0; i < 8; i++) view.setInt32(i * 4, seed[i]);
    view.setUint32(32, nonce >>> 0);
    return view.buffer;
  }
  function same(a, b) { for (var i = 0; i < 8; i++) if ((a[i] | 0) !== (b[i] | 0)) return false; return true; }

  // Plain JS: slices of about 40 ms, so that the page stays responsive. The message is the seed
  // (8 words), the nonce, then the padding: rounds 0-7 depend on the seed alone, so they are done
  // once; each nonce costs the schedule and the other 56 rounds (all in locals, for the JIT).
  function searchJs(seed, shift, done) {
    var mid = IV.slice(), i;
    for (i = 0; i < 8; i++) W[i] = seed[i];
    W[8] = 0; W[9] = 0x80000000 | 0; W[10] = 0; W[11] = 0; W[12] = 0; W[13] = 0; W[14] = 0; W[15] = 288;
    (function () {
      var a = mid[0], b = mid[1], c = mid[2], d = mid[3], e = mid[4], f = mid[5], g = mid[6], h = mid[7], t1, t2;
      for (var r = 0; r < 8; r++) {
        t1 = (h + ((e >>> 6 | e << 26) ^ (e >>> 11 | e << 21) ^ (e >>> 25 | e << 7)) + ((e & f) ^ (~e & g)) + K[r] + W[r]) | 0;
        t2 = (((a >>> 2 | a << 30) ^ (a >>> 13 | a << 19) ^ (a >>> 22 | a << 10)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      mid = [a, b, c, d, e, f, g, h];
    })();
    var nonce = 0, k = new Int32Array(K), w = new Int32Array(W);
    function slice() {
      var until = Date.now() + 40, first = IV[0] | 0, r, x, y, t1, t2, a, b, c, d, e, f, g, h;
      var A = mid[0], B = mid[1], C = mid[2], D = mid[3], E = mid[4], F = mid[5], G = mid[6], H = mid[7];
      while (nonce <= 0xffffffff) {
        w[8] = nonce | 0;
        for (r = 16; r < 64; r++) {
          x = w[r - 15]; y = w[r - 2];
          w[r] = (w[r - 16] + ((x >>> 7 | x << 25) ^ (x >>> 18 | x << 14) ^ (x >>> 3)) + w[r - 7]
            + ((y >>> 17 | y << 15) ^ (y >>> 19 | y << 13) ^ (y >>> 10))) | 0;
        }
        a = A; b = B; c = C; d = D; e = E; f = F; g = G; h = H;
        for (r = 8; r < 64; r++) {
          t1 = (h + ((e >>> 6 | e << 26) ^ (e >>> 11 | e << 21) ^ (e >>> 25 | e << 7)) + ((e & f) ^ (~e & g)) + k[r] + w[r]) | 0;
          t2 = (((a >>> 2 | a << 30) ^ (a >>> 13 | a << 19) ^ (a >>> 22 | a << 10)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
          h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
        }
        if ((((first + a) | 0) >>> shift) === 0) { done(nonce); return; }
        nonce += 1;
        if ((nonce & 0xfff) === 0 && Date.now() >= until) { setTimeout(slice, 0); return; }
      }
      done(null);
    }
    slice();
  }

  // Web Crypto, 256 digests at a time: only when the plain code disagreed with it.
  function searchSubtle(subtle, seed, shift, done) {
    var nonce = 0;
    (function batch() {
      if (nonce > 0xffffffff) { done(null); return; }
      var first = nonce, asks = [];
      for (var i = 0; i < 256 && nonce <= 0xffffffff; i++, nonce++) asks.push(subtle.digest("SHA-256", preimage(seed, nonce)));
      Promise.all(asks).then(function (found) {
        for (var i = 0; i < found.length; i++) {
          var head = new DataView(found[i]).getUint32(0);
          if ((head >>> shift) === 0) { done(first + i); return; }
        }
        batch();
      }, function () { done(null); });
    })();
  }

  // done(nonce, engine): nonce null when no nonce solves it (then ask for a new challenge).
  function solve(challenge, difficulty, done) {
    var root = document.documentElement, started = Date.now();
    if (!(difficulty >= 1 && difficulty <= 32)) { done(null, "none"); return; }
    var shift = 32 - difficulty, seed = sha256(bytesOf(challenge));
    function finish(engine) {
      return function (nonce) {
        root.setAttribute("data-proof-ms", String(Date.now() - started));
        root.setAttribute("data-proof-engine", engine);
        if (nonce !== null) root.setAttribute("data-proof-hashes", String(nonce + 1));
        done(nonce, engine);
      };
    }
    var subtle = window.crypto && window.crypto.subtle;
    if (!subtle) { searchJs(seed, shift, finish("js")); return; }
    Promise.all([subtle.digest("SHA-256", bytesOf(challenge)), subtle.digest("SHA-256", preimage(seed, 0))])
      .then(function (found) {
        var good = same(wordsOf(found[0]), seed) && same(wordsOf(found[1]), digest(seed, 0));
        if (good) searchJs(seed, shift, finish("js"));
        else searchSubtle(subtle, seed, shift, finish("webcrypto"));
      }, function () { searchJs(seed, shift, finish("js")); });
  }

  var api = window.waitroom = window.waitroom || {};
  api.solve = solve;
  api.sha256 = function (text) { return sha256(bytesOf(text)); };
})();
