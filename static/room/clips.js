// The listening room's publishing links: a record's clip, marked on its player (and shown on its waveform: a click
// there moves the player, then *Mark start* or *Mark end* takes the player's time), offered as a download and as a
// link to copy (`GET /records/{event}/{start}/clip?from=&to=`); and an event's podcast feed (`/feeds/{event}`), as an
// absolute link to copy. Loaded before room.js, which uses its globals.
/* global el */
'use strict'

/** A time as people read a mark: "0:12.4", "1:02:03.5" (tenths of a second). */
function formatMark (seconds) {
  const tenths = Math.round(seconds * 10)
  const two = (n) => String(n).padStart(2, '0')
  const [hours, minutes, rest] = [Math.floor(tenths / 36000), Math.floor((tenths % 36000) / 600), tenths % 600]
  const clock = `${two(Math.floor(rest / 10))}.${rest % 10}`
  return hours ? `${hours}:${two(minutes)}:${clock}` : `${minutes}:${clock}`
}

/** Put `text` on the clipboard: with the Clipboard API where the page is a secure context (https, localhost), else
 * with a selected text field and the copy command (plain http on a LAN); whether it worked. */
async function copyText (text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text)
      return true
    } catch (_) {
      // refused (no permission): try the old way
    }
  }
  const field = el('textarea', { value: text, readOnly: true, className: 'offscreen' })
  document.body.append(field)
  field.select()
  let copied = false
  try { copied = document.execCommand('copy') } catch (_) {}
  field.remove()
  return copied
}

/** A button that copies `text()` and says in `status` whether it did, for a few seconds. */
function copyButton (button, status, text) {
  button.addEventListener('click', async () => {
    const copied = await copyText(text())
    status.textContent = copied ? 'Copied.' : 'Not copied: select the link and copy it.'
    clearTimeout(status.timer)
    status.timer = setTimeout(() => { status.textContent = '' }, 4000)
  })
}

/** The absolute address of an event's podcast feed. */
const feedUrl = (event) => `${location.origin}/feeds/${event}`

/** Show the event's feed address, as a link. */
function showFeed (event) {
  const link = document.getElementById('feed-url')
  link.href = link.textContent = feedUrl(event)
}

class ClipMarks {
  /** The clip controls of the record that `audio` plays, its range drawn over `waveform` when it is shown. */
  constructor (audio, waveform) {
    this.audio = audio
    this.waveform = waveform
    this.address = null // the record's clip route
    this.marks = { from: null, to: null }
    this.band = el('span', { className: 'clip-range', hidden: true })
    waveform.node.append(this.band)
    const mark = (which, label) => {
      const button = el('button', { type: 'button', className: `quiet mark-${which}` }, label)
      button.addEventListener('click', () => this.mark(which))
      return button
    }
    this.download = el('a', { className: 'clip-download' }, 'Download clip')
    this.download.setAttribute('download', '') // the file's name is the service's (Content-Disposition)
    this.copy = el('button', { type: 'button', className: 'quiet clip-copy' }, 'Copy clip link')
    this.status = el('span', { className: 'copy-status', role: 'status' })
    copyButton(this.copy, this.status, () => this.link())
    this.note = el('span', { className: 'clip-note' })
    this.node = el('p', { className: 'clip' },
      el('span', { className: 'clip-label' }, 'Clip'),
      mark('from', 'Mark start'), el('output', { className: 'clip-from' }, '—'),
      mark('to', 'Mark end'), el('output', { className: 'clip-to' }, '—'),
      this.note, this.download, this.copy, this.status)
    audio.addEventListener('durationchange', () => this.render())
  }

  /** The clips of `record` (a listing item): marks kept while it is the same record. */
  show (record) {
    this.address = `${location.origin}/records/${record.event}/${record.start}/clip`
    this.render()
  }

  /** Mark the player's time as the clip's start (`from`) or end (`to`). */
  mark (which) {
    this.marks[which] = Math.round(this.audio.currentTime * 1000) / 1000
    this.render()
  }

  /** The clip's absolute address, or null while its marks do not make a range. */
  link () {
    const { from, to } = this.marks
    if (from === null || to === null || to <= from || !this.address) return null
    return `${this.address}?${new URLSearchParams({ from: String(from), to: String(to) })}`
  }

  render () {
    const { from, to } = this.marks
    this.node.querySelector('.clip-from').textContent = from === null ? '—' : formatMark(from)
    this.node.querySelector('.clip-to').textContent = to === null ? '—' : formatMark(to)
    const link = this.link()
    this.download.hidden = this.copy.hidden = !link
    if (link) this.download.href = link
    else this.download.removeAttribute('href')
    this.note.textContent = from !== null && to !== null && to <= from ? 'The end must be after the start.' : ''
    this.note.hidden = !this.note.textContent
    this.node.dataset.link = link || ''
    const duration = this.waveform.duration || this.audio.duration
    const known = Number.isFinite(duration) && duration > 0
    this.band.hidden = !known || from === null
    if (!this.band.hidden) {
      const end = to !== null && to > from ? to : from
      this.band.style.left = `${(100 * Math.min(from, duration)) / duration}%`
      this.band.style.width = `${(100 * Math.max(0, Math.min(end, duration) - from)) / duration}%`
    }
  }
}
