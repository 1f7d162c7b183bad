// The console's own check of the ledger (issue 20): what the server shows is verified here,
// in the browser, with WebCrypto, so an auditor need not trust the server for it.
// - Merkle hashing of RFC 6962 / RFC 9162 §2.1.1: leaf = SHA-256(0x00 || entry bytes),
//   node = SHA-256(0x01 || left || right).
// - Inclusion proofs: RFC 9162 §2.1.3.2; consistency proofs: RFC 9162 §2.1.4.2 (steps
//   numbered as there, as trm_broker/ledger/merkle.py does).
// - Checkpoints: C2SP signed notes (https://c2sp.org/signed-note) of C2SP tlog-checkpoint
//   text, signed with Ed25519; checked with WebCrypto Ed25519 where the browser has it.
// No dependency, no build step; tree sizes and indexes are BigInts (up to 2^64).
"use strict";
(function () {
  var subtle = window.crypto && window.crypto.subtle;
  // SHA-256 of nothing: the root of the empty tree (RFC 9162 §2.1.1).
  var EMPTY_ROOT = bytesOf("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");

  function bytesOf(b64) {
    if (typeof b64 !== "string") throw new Error("not base64");
    var bin = atob(b64);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function concat(parts) {
    var length = parts.reduce(function (n, p) { return n + p.length; }, 0);
    var out = new Uint8Array(length);
    var at = 0;
    parts.forEach(function (p) { out.set(p, at); at += p.length; });
    return out;
  }

  async function sha256(parts) {
    return new Uint8Array(await subtle.digest("SHA-256", concat(parts)));
  }

  function leafHash(data) { return sha256([Uint8Array.of(0), data]); }
  function nodeHash(left, right) { return sha256([Uint8Array.of(1), left, right]); }

  function same(a, b) {
    if (!a || !b || a.length !== b.length) return false;
    var diff = 0;
    for (var i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
    return diff === 0;
  }

  function hashes(list) {
    return list.every(function (h) { return h instanceof Uint8Array && h.length === 32; });
  }

  // RFC 9162 §2.1.3.2: is `leaf` leaf `index` of the tree of `size` leaves with `root`?
  async function verifyInclusion(index, size, leaf, proof, root) {
    index = BigInt(index); size = BigInt(size);
    if (!hashes([leaf, root].concat(proof))) return false;
    if (index < 0n || index >= size) return false; // 1.
    var fn = index, sn = size - 1n; // 2.
    var r = leaf; // 3.
    for (var i = 0; i < proof.length; i++) { // 4.
      var p = proof[i];
      if (sn === 0n) return false; // 4a.
      if ((fn & 1n) === 1n || fn === sn) { // 4b.
        r = await nodeHash(p, r);
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      } else {
        r = await nodeHash(r, p);
      }
      fn >>= 1n; sn >>= 1n; // 4c.
    }
    return sn === 0n && same(r, root); // 5.
  }

  // RFC 9162 §2.1.4.2: does the tree of `second` leaves extend the tree of `first`?
  async function verifyConsistency(first, second, firstRoot, secondRoot, proof) {
    first = BigInt(first); second = BigInt(second);
    if (first < 0n || first > second) return false;
    if (first === second) {
      // Equal sizes: no proof, the same root (the empty tree's, for size 0).
      return proof.length === 0 && same(firstRoot, secondRoot) && (first !== 0n || same(firstRoot, EMPTY_ROOT));
    }
    if (first === 0n) return false; // nothing to prove: every tree extends the empty one
    if (!hashes([firstRoot, secondRoot].concat(proof))) return false;
    if (proof.length === 0) return false; // 1.
    var path = (first & (first - 1n)) === 0n ? [firstRoot].concat(proof) : proof.slice(); // 2.
    var fn = first - 1n, sn = second - 1n; // 3.
    while ((fn & 1n) === 1n) { fn >>= 1n; sn >>= 1n; } // 4.
    var fr = path[0], sr = path[0]; // 5.
    for (var i = 1; i < path.length; i++) { // 6.
      var c = path[i];
      if (sn === 0n) return false;
      if ((fn & 1n) === 1n || fn === sn) {
        fr = await nodeHash(c, fr);
        sr = await nodeHash(c, sr);
        while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
      } else {
        sr = await nodeHash(sr, c);
      }
      fn >>= 1n; sn >>= 1n;
    }
    return sn === 0n && same(fr, firstRoot) && same(sr, secondRoot); // 7.
  }

  // signed-note: a verifier key is <name>+<hex key ID>+<base64(0x01 || 32-byte key)>.
  function parseVkey(vkey) {
    var parts = vkey.split("+");
    if (parts.length < 3 || !/^[0-9a-f]{8}$/i.test(parts[1])) throw new Error("bad verifier key");
    var raw = bytesOf(parts.slice(2).join("+"));
    if (raw.length !== 33 || raw[0] !== 1) throw new Error("not an Ed25519 verifier key");
    var id = new Uint8Array(4);
    for (var i = 0; i < 4; i++) id[i] = parseInt(parts[1].substr(2 * i, 2), 16);
    return { name: parts[0], id: id, key: raw.slice(1) };
  }

  // signed-note "Format": text (ending in a newline), a blank line, then signature lines
  // "— <name> <base64(4-byte key ID || signature)>".
  function openNote(note) {
    var split = note.lastIndexOf("\n\n");
    if (split < 0 || !note.endsWith("\n")) throw new Error("not a signed note");
    var text = note.slice(0, split + 1);
    var signatures = note.slice(split + 2, -1).split("\n").map(function (line) {
      var m = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!m) throw new Error("bad signature line");
      var raw = bytesOf(m[2]);
      return { name: m[1], id: raw.slice(0, 4), signature: raw.slice(4) };
    });
    return { text: text, signatures: signatures };
  }

  // tlog-checkpoint "Note text": origin, decimal size, base64 root hash, extension lines.
  function parseCheckpoint(text) {
    var lines = text.split("\n");
    if (lines.length < 4 || !/^(0|[1-9][0-9]{0,19})$/.test(lines[1])) throw new Error("bad checkpoint");
    var root = bytesOf(lines[2]);
    if (root.length !== 32) throw new Error("bad root hash");
    return { origin: lines[0], size: BigInt(lines[1]), root: root };
  }

  // "valid", "invalid", or "unsupported" (this browser has no WebCrypto Ed25519).
  async function checkNoteSignature(note, vkeys) {
    var opened;
    try { opened = openNote(note); } catch (e) { return "invalid"; }
    var data = new TextEncoder().encode(opened.text);
    for (var k = 0; k < vkeys.length; k++) {
      var vkey;
      try { vkey = parseVkey(vkeys[k]); } catch (e) { continue; }
      for (var s = 0; s < opened.signatures.length; s++) {
        var sig = opened.signatures[s];
        if (sig.name !== vkey.name || !same(sig.id, vkey.id) || sig.signature.length !== 64) continue;
        var key;
        try {
          key = await subtle.importKey("raw", vkey.key, { name: "Ed25519" }, false, ["verify"]);
        } catch (e) {
          return "unsupported";
        }
        if (await subtle.verify({ name: "Ed25519" }, key, sig.signature, data)) return "valid";
      }
    }
    return "invalid";
  }

  window.TrmProofs = {
    bytesOf: bytesOf,
    leafHash: leafHash,
    verifyInclusion: verifyInclusion,
    verifyConsistency: verifyConsistency,
    openNote: openNote,
    parseCheckpoint: parseCheckpoint,
    checkNoteSignature: checkNoteSignature,
  };

  // --- the pages -------------------------------------------------------------------------

  var texts = document.getElementById("proof-texts");
  function say(name) { return texts ? texts.dataset[name] : name; }

  // The ledger's verifier keys the auditor pinned: `trm-broker console login --broker-key`
  // puts them in the sign-in link's fragment ("#pin=<keys, space-separated>"), which the
  // browser never sends to a server; kept for this tab only (sessionStorage).
  var PIN = "trm-console-pinned-vkeys";
  function keys(text) { return (text || "").split(" ").filter(Boolean); }
  function pinned() {
    try { var kept = window.sessionStorage.getItem(PIN); return kept === null ? null : keys(kept); } catch (e) { return null; }
  }
  (function takePin() {
    var found = /^#pin=([^&#]*)$/.exec(window.location.hash);
    if (!found) return;
    try {
      window.sessionStorage.setItem(PIN, keys(decodeURIComponent(found[1])).join(" "));
      window.history.replaceState(null, "", window.location.pathname + window.location.search);
    } catch (e) { /* no storage: the page checks with the served keys, and says so */ }
  })();

  // The signature of one or more notes: "valid" if the browser checked them all, "server"
  // if it cannot check Ed25519 and the server did, else "invalid". With pinned keys, only
  // they are used, and a served key not among them makes it "unpinned". Says which.
  async function signatureOf(holder, notes) {
    var served = keys(holder.dataset.vkeys);
    var pins = pinned();
    var vkeys = pins || served;
    var outcome = "valid";
    if (pins && served.some(function (k) { return pins.indexOf(k) < 0; })) outcome = "unpinned";
    for (var i = 0; i < notes.length && outcome !== "unpinned"; i++) {
      var one = await checkNoteSignature(notes[i], vkeys);
      if (one === "invalid") { outcome = "invalid"; break; }
      if (one === "unsupported") outcome = holder.dataset.serverVerified === "true" ? "server" : "invalid";
    }
    var where = holder.querySelector("[data-signature-status]");
    if (where) {
      var text = { valid: pins ? "signaturePinned" : "signatureValid", server: "signatureServer", invalid: "signatureInvalid", unpinned: "signatureUnpinned" }[outcome];
      where.textContent = say(text);
      where.className = "signature-status " + (outcome === "valid" || outcome === "server" ? "verified" : "failed");
    }
    return outcome === "unpinned" ? "invalid" : outcome;
  }

  function mark(cell, ok) {
    cell.textContent = (ok ? "\u2714 " : "\u2718 ") + say(ok ? "verified" : "failed");
    cell.className = "proof-status " + (ok ? "verified" : "failed");
    cell.dataset.verified = ok ? "true" : "false";
  }

  // The cells of a row say what the verified bytes say (else the row is not verified).
  function cellsMatch(row, entry) {
    return Array.prototype.every.call(row.querySelectorAll("[data-field]"), function (cell) {
      var value = entry[cell.dataset.field];
      var expected = Array.isArray(value) ? value.join(" ") : value === undefined ? "" : String(value);
      return cell.dataset.value === expected;
    });
  }

  async function checkRow(row, checkpoint) {
    try {
      var data = bytesOf(row.dataset.entry);
      var proof = (row.dataset.proof || "").split(" ").filter(Boolean).map(bytesOf);
      var included = await verifyInclusion(row.dataset.index, checkpoint.size, await leafHash(data), proof, checkpoint.root);
      return included && cellsMatch(row, JSON.parse(new TextDecoder().decode(data)));
    } catch (e) {
      return false;
    }
  }

  async function checkLedger(section) {
    var rows = Array.prototype.slice.call(document.querySelectorAll("#entries tr[data-index]"));
    rows.forEach(function (row) { row.querySelector("[data-proof-status]").textContent = say("checking"); });
    var signature = await signatureOf(section, [section.dataset.note]);
    var checkpoint = null;
    try { checkpoint = parseCheckpoint(openNote(section.dataset.note).text); } catch (e) { checkpoint = null; }
    var verified = 0;
    for (var i = 0; i < rows.length; i++) {
      var ok = signature !== "invalid" && checkpoint !== null && (await checkRow(rows[i], checkpoint));
      if (ok) verified++;
      mark(rows[i].querySelector("[data-proof-status]"), ok);
    }
    var summary = document.getElementById("proof-summary");
    if (summary && rows.length) {
      summary.textContent = say("summary")
        .replace("%(verified)s", String(verified))
        .replace("%(total)s", String(rows.length))
        .replace("%(size)s", checkpoint ? String(checkpoint.size) : "?");
    }
  }

  async function checkConsistency(section) {
    var cell = section.querySelector("[data-consistency-status]");
    cell.textContent = say("checking");
    var ok = false;
    try {
      var first = parseCheckpoint(openNote(section.dataset.firstNote).text);
      var second = parseCheckpoint(openNote(section.dataset.secondNote).text);
      var proof = (section.dataset.proof || "").split(" ").filter(Boolean).map(bytesOf);
      var signature = await signatureOf(section, [section.dataset.firstNote, section.dataset.secondNote]);
      ok = signature !== "invalid" && (await verifyConsistency(first.size, second.size, first.root, second.root, proof));
    } catch (e) {
      ok = false;
    }
    cell.textContent = (ok ? "\u2714 " : "\u2718 ") + say(ok ? "consistent" : "inconsistent");
    cell.className = "proof-status " + (ok ? "verified" : "failed");
    cell.dataset.verified = ok ? "true" : "false";
  }

  if (!subtle) return; // WebCrypto needs a secure context (HTTPS, or loopback)
  var ledger = document.getElementById("checkpoint");
  if (ledger && document.getElementById("entries")) checkLedger(ledger);
  var consistency = document.getElementById("consistency");
  if (consistency) checkConsistency(consistency);
})();
