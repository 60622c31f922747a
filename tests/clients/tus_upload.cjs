// Upload a file with tus-js-client, resuming by itself after breaks; prints one JSON line with what happened.
// node tus_upload.cjs '{"endpoint": ..., "file": ..., "protocol": "tus-v1"|"ietf-draft-05", "deferred": bool,
//                       "chunkSize": n|null, "headers": {...}, "type": "audio/wav"}'
const fs = require('fs')
const net = require('net')
const { PassThrough } = require('stream')
const tus = require('tus-js-client')

// Every socket the client opens, to count the bytes it handed to the kernel (sent), request heads included.
const sockets = []
const connect = net.Socket.prototype.connect
net.Socket.prototype.connect = function (...args) {
  sockets.push(this)
  return connect.apply(this, args)
}
const sent = () => sockets.reduce((total, s) => total + (s._bytesDispatched ?? s.bytesWritten ?? 0), 0)

const args = JSON.parse(process.argv[2])
const size = fs.statSync(args.file).size
let highest = 0 // the furthest offset sent so far
let resent = 0 // bytes sent again: the drops of the offset from which the client sends
const drops = []
let retries = 0

const options = {
  endpoint: args.endpoint,
  protocol: args.protocol,
  headers: args.headers || {},
  metadata: { filetype: args.type || 'application/octet-stream', filename: 'show.wav' },
  retryDelays: [0, 200, 500, 1000, 1000, 1000, 2000, 2000, 2000, 3000, 3000, 3000],
  storeFingerprintForResuming: false,
  removeFingerprintOnSuccess: true,
  onShouldRetry: () => { retries += 1; return true },
  onProgress: (sent) => {
    if (sent < highest) { drops.push(highest - sent); resent += highest - sent; highest = sent }
    highest = Math.max(highest, sent)
  },
  onError: (error) => {
    console.log(JSON.stringify({ ok: false, error: String(error), retries, resent, drops, sent: sent() }))
    process.exit(1)
  },
  onSuccess: () => {
    console.log(JSON.stringify({ ok: true, url: upload.url, size, retries, resent, drops, sent: sent() }))
  },
}
let input
if (args.deferred) {
  // A stream of unknown length, as a live source gives (a plain Readable, not a file: tus-js-client reads that in
  // chunks it buffers, and tells the length at the end).
  input = fs.createReadStream(args.file, { highWaterMark: 1 << 20 }).pipe(new PassThrough())
  options.uploadLengthDeferred = true
  options.chunkSize = args.chunkSize || 8 << 20
} else {
  input = fs.createReadStream(args.file)
  options.uploadSize = size
  if (args.chunkSize) options.chunkSize = args.chunkSize
}
const upload = new tus.Upload(input, options)
upload.start()
