// The listening room: browse, play, watch and upload a station's recordings.
// Talks to the service only through its public HTTP API and /sse, like any client. No build step, no CDN.
/* global tus, Waveform, formatDuration, ClipMarks, showFeed, copyButton, feedUrl */
'use strict'

const PAGE = 10
const TOKEN_KEY = 'tornado-records-token'
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

const $ = (id) => document.getElementById(id)

const state = {
  events: { offset: 0, count: 0, q: '' },
  open: null, // the UUID of the event shown, or null for the events list
  records: { offset: 0, count: 0 },
  titles: new Map(), // event UUID -> title (null: untitled)
  uploads: new Map(), // "event start" -> {event, start, type, mode, state, bytes, size}
  analysed: new Map(), // "event start" -> the record from its record-analyzed event (see withAnalysis)
}

// When the page first showed each list, in ms since navigation start (read by the browser tests).
window.roomTimings = {}

// -- helpers -----------------------------------------------------------------------------------------------------

/** Element `tag` with attributes/properties `props` and children (strings or nodes). */
function el (tag, props = {}, ...children) {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue
    if (name === 'dataset') Object.assign(node.dataset, value)
    else if (name in node) node[name] = value
    else node.setAttribute(name, value === true ? '' : value)
  }
  node.append(...children)
  return node
}

/** A size in bytes as people read it: 0 B, 12.3 kB, 4.5 MB, 1.2 GB. */
function formatBytes (bytes) {
  if (bytes === null || bytes === undefined) return '—'
  const units = ['B', 'kB', 'MB', 'GB', 'TB']
  let value = bytes
  let unit = 0
  while (value >= 1000 && unit < units.length - 1) { value /= 1000; unit += 1 }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`
}

/** A naive start (the event's own time) as "2024-01-01 10:00:00". */
const formatStart = (start) => start ? start.replace('T', ' ') : '—'

/** A UTC time ("...Z") in the reader's own time zone. */
function formatUtc (text) {
  const date = new Date(text)
  return Number.isNaN(date.getTime()) ? text : date.toLocaleString()
}

const titleOf = (event) => state.titles.get(event) || event
const recordUrl = (event, start) => `/records/${event}/${start}`
const keyOf = (item) => `${item.event} ${item.start}`

/** Keep `container`'s children those of `items` in order, reusing the child of each key (a playing <audio> goes
 * on playing); `create(item)` makes a new child, `update(node, item)` refreshes one. */
function reconcile (container, items, key, create, update) {
  const existing = new Map([...container.children].map((node) => [node.dataset.key, node]))
  let position = container.firstElementChild
  for (const item of items) {
    let node = existing.get(key(item))
    existing.delete(key(item))
    if (node) update(node, item)
    else { node = create(item); node.dataset.key = key(item); update(node, item) }
    if (node !== position) container.insertBefore(node, position)
    else position = position.nextElementSibling
  }
  for (const node of existing.values()) node.remove()
}

/** Run `fn` once, `delay` ms after the last of a burst of calls. */
function debounced (fn, delay) {
  let timer = null
  return () => { clearTimeout(timer); timer = setTimeout(fn, delay) }
}

function showError (id, message) {
  const node = $(id)
  node.textContent = message || ''
  node.hidden = !message
}

// -- the API, with the write token asked once --------------------------------------------------------------------

class ApiError extends Error {}

let tokenAsked = null // the pending question, so that two writes ask once

/** Ask for the write token (a dialog); resolves true once one is kept for this tab, false if the user cancels. */
function askToken (wrong) {
  if (tokenAsked) return tokenAsked
  const dialog = $('token-dialog')
  $('token-wrong').hidden = !wrong
  $('token-input').value = ''
  tokenAsked = new Promise((resolve) => {
    const done = (ok) => {
      dialog.removeEventListener('close', onClose)
      tokenAsked = null
      resolve(ok)
    }
    const onClose = () => {
      const token = $('token-input').value.trim()
      if (dialog.returnValue === 'ok' && token) {
        sessionStorage.setItem(TOKEN_KEY, token)
        done(true)
      } else done(false)
    }
    dialog.addEventListener('close', onClose)
    dialog.returnValue = ''
    dialog.showModal()
    $('token-input').focus()
  })
  return tokenAsked
}

function writeHeaders () {
  const token = sessionStorage.getItem(TOKEN_KEY)
  return token ? { Authorization: `Bearer ${token}` } : {}
}

/** fetch(path) and its JSON; a write sends the token, and on 401 asks for it and tries again. */
async function api (path, { method = 'GET', json } = {}) {
  const write = method !== 'GET' && method !== 'HEAD'
  for (;;) {
    const headers = write ? writeHeaders() : {}
    const init = { method, headers }
    if (json !== undefined) {
      headers['Content-Type'] = 'application/json'
      init.body = JSON.stringify(json)
    }
    const response = await fetch(path, init)
    if (response.status === 401 && write) {
      if (await askToken('Authorization' in headers)) continue
      throw new ApiError('Not changed: this needs the write token')
    }
    if (!response.ok) {
      let detail = `${response.status} ${response.statusText}`
      try { detail = (await response.json()).detail || detail } catch (_) {}
      throw new ApiError(detail)
    }
    return response.status === 204 ? null : response.json()
  }
}

// -- events ------------------------------------------------------------------------------------------------------

async function loadEvents () {
  const { offset, q } = state.events
  const query = new URLSearchParams({ limit: PAGE, offset, order: 'desc' })
  if (q) query.set('q', q)
  let page
  try {
    page = await api(`/records?${query}`)
  } catch (error) {
    showError('events-error', `The events could not be listed: ${error.message}`)
    return
  }
  if (state.events.q !== q || state.events.offset !== offset) return // a newer request is on its way
  showError('events-error', '')
  state.events.count = page.count
  for (const item of page.events) state.titles.set(item.event, item.title)
  reconcile($('events-body'), page.events, (item) => item.event, createEventRow, updateEventRow)
  $('events-empty').hidden = page.events.length > 0
  $('events-empty').textContent = q ? `No event matches “${q}”.` : 'No events yet.'
  pager('events', offset, page.events.length, page.count)
  if (!window.roomTimings.events) window.roomTimings.events = performance.now()
  renderUploads()
}

function createEventRow () {
  return el('tr', {},
    el('td', {}, el('a', { className: 'event-link' }), el('div', { className: 'uuid small' })),
    el('td', { className: 'num count' }), el('td', { className: 'num duration' }), el('td', { className: 'num bytes' }),
    el('td', { className: 'last' }))
}

function updateEventRow (row, item) {
  const link = row.querySelector('.event-link')
  link.href = `#event/${item.event}`
  link.textContent = item.title || item.event
  link.classList.toggle('untitled', !item.title)
  row.querySelector('.uuid').textContent = item.title ? item.event : ''
  row.querySelector('.count').replaceChildren(`${item.records}`,
    el('span', { className: 'unit' }, item.records === 1 ? ' record' : ' records'))
  const duration = row.querySelector('.duration')
  const unknown = typeof item.duration !== 'number'
  duration.textContent = formatDuration(item.duration)
  duration.classList.toggle('unknown', unknown)
  duration.title = unknown ? 'None of its records is measured yet' : 'The total duration of its records'
  row.querySelector('.bytes').textContent = formatBytes(item.bytes)
  row.querySelector('.last').textContent = formatStart(item.last_start)
}

/** The pager of a list: "11–20 of 42", and its buttons enabled where there is a page to go to. */
function pager (name, offset, shown, count) {
  $(`${name}-page`).textContent = count ? `${offset + 1}–${offset + shown} of ${count}` : ''
  $(`${name}-prev`).disabled = offset === 0
  $(`${name}-next`).disabled = offset + shown >= count
}

// -- one event's records -----------------------------------------------------------------------------------------

async function loadRecords () {
  const event = state.open
  const { offset } = state.records
  const query = new URLSearchParams({ limit: PAGE, offset, order: 'desc' })
  let page
  try {
    page = await api(`/records/${event}?${query}`)
  } catch (error) {
    showError('records-error', `The records could not be listed: ${error.message}`)
    return
  }
  if (state.open !== event || state.records.offset !== offset) return
  showError('records-error', '')
  if ('title' in page) state.titles.set(event, page.title)
  state.records.count = page.count
  renderEventHeading()
  reconcile($('records-list'), page.records.map(withAnalysis), keyOf, createRecordItem, updateRecordItem)
  $('records-empty').hidden = page.records.length > 0
  pager('records', offset, page.records.length, page.count)
  if (!window.roomTimings.records) window.roomTimings.records = performance.now()
}

function renderEventHeading () {
  const title = state.titles.get(state.open)
  $('event-heading').textContent = title || state.open
  $('event-heading').classList.toggle('untitled', !title)
  $('event-uuid').textContent = state.open
  $('event-uuid').parentElement.hidden = !title // an untitled event's heading is its UUID already
  showFeed(state.open)
  if (document.activeElement !== $('title-input')) $('title-input').value = title || ''
}

function createRecordItem (record) {
  const url = recordUrl(record.event, record.start)
  const remove = el('button', { type: 'button', className: 'danger delete' }, 'Delete')
  remove.addEventListener('click', () => confirmDelete(record.event, record.start))
  const audio = el('audio', { controls: true, preload: 'none', src: url })
  audio.setAttribute('aria-label', `Play the recording of ${formatStart(record.start)}`)
  const item = el('li', { className: 'record' },
    el('h3', { className: 'start' }, formatStart(record.start)),
    el('p', { className: 'meta' }),
    el('p', { className: 'analysis' }))
  item.facts = ['duration', 'size', 'loudness', 'silence-note', 'type', 'modified']
    .map((name) => el('span', { className: name })) // shown in this order, those known, with a dot between
  item.waveform = new Waveform(audio)
  item.clip = new ClipMarks(audio, item.waveform)
  item.append(item.waveform.node, audio, item.clip.node,
    el('p', { className: 'actions' },
      el('a', { href: url, download: `${record.event}_${record.start.replaceAll(':', '-')}`, className: 'download' },
        'Download'), ' ', remove))
  return item
}

// What a person is told of a record whose audio has no analysis (yet), in place of its waveform.
const ANALYSIS_STATES = {
  pending: 'Measuring the audio… its duration and waveform show here once that is done.',
  unsupported: 'This file is not audio the service can read: it has no duration or waveform (it downloads as sent).',
  failed: 'The audio could not be measured (the service’s log says why): no duration or waveform.',
}

/** A loudness in LUFS as "-23.1 LUFS"; "silent" where the service measured none. */
const formatLoudness = (loudness) => loudness === null ? 'silent' : `${loudness.toFixed(1)} LUFS`

/** The audio's format as a tooltip: "ogg (opus), 96 kbit/s, 48 kHz, stereo". */
function describeAudio ({ format, codec, bitrate, sample_rate: rate, channels }) {
  return [format === codec ? format : `${format} (${codec})`, bitrate && `${Math.round(bitrate / 1000)} kbit/s`,
    rate && `${rate / 1000} kHz`, { 1: 'mono', 2: 'stereo' }[channels] || (channels && `${channels} channels`)]
    .filter(Boolean).join(', ')
}

const formatSilence = ({ start, end }) => `silence at ${formatDuration(start)}–${formatDuration(end)}`

/** The silences (dead air) found: "silence at 0:04–0:07", "3 silences"; '' for none. */
function describeSilences (silences) {
  if (silences.length === 1) return formatSilence(silences[0])
  return silences.length ? `${silences.length} silences` : ''
}

function updateRecordItem (item, record) {
  const audio = item.querySelector('audio')
  const facts = record.analysis === 'done' ? record.audio : null
  const text = (name, value, title) => {
    const node = item.facts.find((span) => span.classList.contains(name))
    node.textContent = value || ''
    if (title !== undefined) node.title = title || ''
    return node
  }
  text('duration', facts && formatDuration(facts.duration)).dataset.seconds = facts ? facts.duration : ''
  text('size', formatBytes(record.size)).dataset.bytes = record.size
  const peak = facts && facts.true_peak !== null ? `${facts.true_peak.toFixed(1)} dBTP` : '—'
  text('loudness', facts && formatLoudness(facts.loudness), facts && `Loudness (EBU R128); true peak ${peak}`)
  const silences = (facts && facts.silences) || []
  text('silence-note', describeSilences(silences), silences.map(formatSilence).join('\n'))
  text('type', record.type, facts ? describeAudio(facts) : '')
  text('modified', `modified ${formatUtc(record.modified)}`)
  const known = item.facts.filter((span) => span.textContent)
  item.querySelector('.meta').replaceChildren(...known.flatMap((span, i) => i ? [' · ', span] : [span]))
  const analysis = item.querySelector('.analysis')
  analysis.textContent = ANALYSIS_STATES[record.analysis] || ''
  analysis.hidden = Boolean(facts) || !analysis.textContent
  analysis.className = `analysis ${record.analysis}`
  item.dataset.analysis = record.analysis
  if (facts) item.waveform.show(record)
  else item.waveform.hide()
  item.clip.show(record)
  if (item.dataset.etag && item.dataset.etag !== record.etag && audio.paused) audio.load() // a new version
  item.dataset.etag = record.etag
}

/** The record with the analysis that /sse reported for its version, where the listing read before it was kept. */
function withAnalysis (record) {
  const known = state.analysed.get(keyOf(record))
  return known && known.etag === record.etag && record.analysis === 'pending'
    ? { ...record, analysis: known.analysis, audio: known.audio }
    : record
}

/** An analysis ended: the record's row (if shown, and of that version) shows its facts, the events their total. */
function recordAnalyzed (data) {
  const record = data.record
  state.analysed.set(keyOf(record), record)
  if (state.analysed.size > 500) state.analysed.delete(state.analysed.keys().next().value)
  const item = document.querySelector(`#records-list [data-key="${CSS.escape(keyOf(record))}"]`)
  if (item && item.dataset.etag === record.etag) updateRecordItem(item, record)
  refreshEvents()
}

/** Ask, then delete one record. */
function confirmDelete (event, start) {
  const dialog = $('delete-dialog')
  $('delete-what').textContent = `${titleOf(event)}, recorded ${formatStart(start)}. This cannot be undone.`
  dialog.returnValue = ''
  dialog.addEventListener('close', async () => {
    if (dialog.returnValue !== 'delete') return
    try {
      await api(recordUrl(event, start), { method: 'DELETE' })
      document.querySelector(`#records-list [data-key="${CSS.escape(`${event} ${start}`)}"]`)?.remove()
      refreshRecords()
      refreshEvents()
    } catch (error) {
      showError('records-error', `Not deleted: ${error.message}`)
    }
  }, { once: true })
  dialog.showModal()
}

async function saveTitle (submit) {
  submit.preventDefault()
  const event = state.open
  const title = $('title-input').value.trim() || null
  $('title-status').textContent = 'Saving…'
  try {
    const answer = await api(`/records/${event}`, { method: 'PUT', json: { title } })
    state.titles.set(event, answer.title)
    $('title-status').textContent = 'Saved.'
    renderEventHeading()
    refreshEvents()
  } catch (error) {
    $('title-status').textContent = `Not saved: ${error.message}`
  }
}

// -- recording now -----------------------------------------------------------------------------------------------

async function loadUploads () {
  try {
    const answer = await api('/uploads')
    state.uploads = new Map(answer.uploads.map((upload) => [keyOf(upload), upload]))
  } catch (_) {
    // A service without the route: the uploads that start from now on still show, from /sse.
  }
  renderUploads()
  if (!window.roomTimings.uploads) window.roomTimings.uploads = performance.now()
}

function renderUploads () {
  const uploads = [...state.uploads.values()].sort((a, b) => keyOf(a).localeCompare(keyOf(b)))
  for (const upload of uploads) learnTitle(upload.event)
  reconcile($('now-list'), uploads, keyOf, createUploadItem, updateUploadItem)
  $('now-empty').hidden = uploads.length > 0
}

function createUploadItem (upload) {
  const listen = el('button', { type: 'button', className: 'listen' }, 'Listen live')
  listen.addEventListener('click', () => listenLive(upload.event, upload.start))
  return el('li', { className: 'upload' },
    el('span', { className: 'dot', 'aria-hidden': 'true' }),
    el('a', { className: 'event-link', href: `#event/${upload.event}` }),
    ' ', el('span', { className: 'start' }, formatStart(upload.start)),
    ' ', el('span', { className: 'state' }),
    ' ', el('strong', { className: 'size' }),
    ' ', listen)
}

function updateUploadItem (item, upload) {
  item.querySelector('.event-link').textContent = titleOf(upload.event)
  item.classList.toggle('interrupted', upload.state === 'interrupted')
  const how = { append: 'live recorder', resumable: 'resumable upload', put: 'upload' }[upload.mode] || 'upload'
  item.querySelector('.state').textContent = upload.state === 'interrupted' ? `(${how}, interrupted)` : `(${how})`
  const size = item.querySelector('.size')
  size.textContent = formatBytes(upload.bytes)
  size.dataset.bytes = upload.bytes
}

/** Learn the title of an event not seen in a list yet (a recording of a new event), once. */
async function learnTitle (event) {
  if (state.titles.has(event)) return
  state.titles.set(event, null)
  try {
    const page = await api(`/records/${event}?limit=0`)
    if (page.title === undefined || state.titles.get(event) !== null) return
    state.titles.set(event, page.title)
    renderUploads()
  } catch (_) {
    state.titles.delete(event) // asked again at the next change
  }
}

/** Play a recording in progress from its beginning, following it as it arrives. */
function listenLive (event, start) {
  const audio = $('live-audio')
  $('live-name').textContent = `Listening live: ${titleOf(event)}, ${formatStart(start)}`
  $('live-player').hidden = false
  audio.src = `${recordUrl(event, start)}/live`
  audio.play().catch(() => {}) // the user may press play on the controls instead
  audio.focus()
}

function stopListening () {
  const audio = $('live-audio')
  audio.pause()
  audio.removeAttribute('src')
  audio.load()
  $('live-player').hidden = true
}

// -- live updates from /sse --------------------------------------------------------------------------------------

const refreshEvents = debounced(() => { if (!state.open) loadEvents() }, 100)
const refreshRecords = debounced(() => { if (state.open) loadRecords() }, 100)

const HANDLERS = {
  'record-created': recordChanged,
  'record-updated': recordChanged,
  'record-deleted': (data) => {
    const upload = state.uploads.get(keyOf(data.record))
    if (upload && upload.state === 'interrupted') state.uploads.delete(keyOf(data.record))
    recordChanged(data)
  },
  'upload-started': (data) => {
    const mode = data.append ? 'append' : data.resumable ? 'resumable' : 'put'
    state.uploads.set(keyOf(data), { ...data, mode, state: 'receiving', bytes: 0, size: null })
  },
  'upload-progress': (data) => updateUpload(data, { bytes: data.bytes }),
  'upload-resumed': (data) => updateUpload(data, { state: 'receiving' }),
  'upload-interrupted': (data) => updateUpload(data, { state: 'interrupted', bytes: data.bytes, size: data.size }),
  'upload-aborted': (data) => state.uploads.delete(keyOf(data)),
  'upload-completed': (data) => state.uploads.delete(keyOf(data)),
  'record-analyzed': recordAnalyzed,
  'event-updated': (data) => {
    state.titles.set(data.event, data.title)
    if (state.open === data.event) renderEventHeading()
    refreshEvents()
  },
}

function recordChanged (data) {
  const upload = state.uploads.get(keyOf(data.record))
  if (upload && upload.mode !== 'append') state.uploads.delete(keyOf(data.record)) // its upload has ended
  if (state.open === data.record.event) refreshRecords()
  refreshEvents()
}

function updateUpload (data, changes) {
  const key = keyOf(data)
  const upload = state.uploads.get(key) || { ...data, mode: 'append', state: 'receiving', bytes: 0, size: null }
  state.uploads.set(key, { ...upload, ...changes })
}

function listen () {
  const source = new EventSource('/sse')
  let broken = false
  source.onopen = () => {
    $('live-status').textContent = 'Live: updates arrive as they happen.'
    $('live-status').classList.remove('offline')
    if (broken) { loadUploads(); refreshEvents(); refreshRecords() } // catch up on what a long break missed
    broken = false
  }
  source.onerror = () => {
    broken = true
    $('live-status').textContent = 'Live updates interrupted; reconnecting…'
    $('live-status').classList.add('offline')
  }
  source.onmessage = (message) => {
    let event
    try { event = JSON.parse(message.data) } catch (_) { return }
    const handler = HANDLERS[event.type]
    if (!handler) return
    handler(event.data)
    renderUploads()
  }
}

// -- uploading a file (tus, resumable) ---------------------------------------------------------------------------

/** A random (version 4) UUID; crypto.randomUUID needs a secure context, which plain http on a LAN is not. */
function randomUuid () {
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  bytes[6] = (bytes[6] & 0x0f) | 0x40
  bytes[8] = (bytes[8] & 0x3f) | 0x80
  const hex = [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

/** A datetime-local value for now, to the second. */
function nowLocal () {
  const now = new Date()
  now.setMinutes(now.getMinutes() - now.getTimezoneOffset())
  return now.toISOString().slice(0, 19)
}

function uploadFile (submit) {
  submit.preventDefault()
  const event = $('upload-event').value.trim().toLowerCase()
  let start = $('upload-start').value
  const file = $('upload-file').files[0]
  if (!UUID.test(event)) { $('upload-status').textContent = 'The event must be a UUID.'; return }
  if (!start || !file) { $('upload-status').textContent = 'Choose a start and a file.'; return }
  if (start.length === 16) start += ':00'
  const progress = $('upload-progress')
  const button = $('upload-submit')
  progress.hidden = false
  progress.value = 0
  button.disabled = true
  const finish = (message) => {
    $('upload-status').textContent = message
    button.disabled = false
  }
  const attempt = () => {
    const upload = new tus.Upload(file, {
      endpoint: location.origin + recordUrl(event, start),
      protocol: 'tus-v1',
      headers: writeHeaders(),
      metadata: { filetype: file.type || 'application/octet-stream', filename: file.name },
      retryDelays: [0, 1000, 3000, 5000, 10000],
      storeFingerprintForResuming: false,
      onProgress: (sent, total) => {
        progress.value = total ? (100 * sent) / total : 0
        $('upload-status').textContent = `Uploading ${file.name}: ${formatBytes(sent)} of ${formatBytes(total)}`
      },
      onSuccess: () => {
        progress.value = 100
        finish(`Stored ${file.name} as ${formatStart(start)}.`)
      },
      onError: async (error) => {
        const status = error.originalResponse ? error.originalResponse.getStatus() : 0
        if (status === 401) {
          if (await askToken('Authorization' in writeHeaders())) return attempt()
          return finish('Not uploaded: this needs the write token.')
        }
        let detail = error.message
        try { detail = JSON.parse(error.originalResponse.getBody()).detail || detail } catch (_) {}
        finish(`Not uploaded: ${detail}`)
      },
    })
    upload.start()
  }
  $('upload-status').textContent = `Uploading ${file.name}…`
  attempt()
}

// -- navigation --------------------------------------------------------------------------------------------------

/** Show what the address names: `#event/<uuid>` is one event's records, anything else the events list. */
function route () {
  const match = /^#event\/(.+)$/.exec(location.hash)
  const event = match && UUID.test(match[1]) ? match[1].toLowerCase() : null
  const changed = event !== state.open
  state.open = event
  $('events').hidden = Boolean(event)
  $('event').hidden = !event
  if (event) {
    if (changed) {
      state.records.offset = 0
      $('records-list').replaceChildren()
      $('title-status').textContent = ''
      $('upload-event').value = event
      renderEventHeading()
      $('event-heading').focus()
    }
    loadRecords()
  } else {
    loadEvents()
    if (changed) $('events-heading').focus()
  }
}

function pageBy (name, load, step) {
  return () => {
    const page = state[name]
    page.offset = Math.max(0, page.offset + step)
    load()
  }
}

/** Show what the service says about itself (such as writes open to anyone, with no token): /room/notices.json. */
async function loadNotices () {
  try {
    const response = await fetch('/room/notices.json', { cache: 'no-store' })
    if (!response.ok) return
    const { notices } = await response.json()
    $('notices').replaceChildren(...notices.map((text) => el('li', {}, text)))
    $('notices').hidden = notices.length === 0
  } catch {
    // no notices to show
  }
}

function start () {
  $('filter-form').addEventListener('submit', (submit) => submit.preventDefault())
  const filter = debounced(() => {
    state.events.q = $('filter').value.trim()
    state.events.offset = 0
    loadEvents()
  }, 200)
  $('filter').addEventListener('input', filter)
  $('events-prev').addEventListener('click', pageBy('events', loadEvents, -PAGE))
  $('events-next').addEventListener('click', pageBy('events', loadEvents, PAGE))
  $('records-prev').addEventListener('click', pageBy('records', loadRecords, -PAGE))
  $('records-next').addEventListener('click', pageBy('records', loadRecords, PAGE))
  $('title-form').addEventListener('submit', saveTitle)
  copyButton($('feed-copy'), $('feed-status'), () => feedUrl(state.open))
  $('upload-form').addEventListener('submit', uploadFile)
  $('upload-new-event').addEventListener('click', () => { $('upload-event').value = randomUuid() })
  $('upload-start').value = nowLocal()
  $('live-stop').addEventListener('click', stopListening)
  $('token-cancel').addEventListener('click', () => $('token-dialog').close('cancel'))
  $('skip').addEventListener('click', (click) => {
    click.preventDefault() // the address names the view: focus its heading, stay there
    $(state.open ? 'event-heading' : 'events-heading').focus()
  })
  window.addEventListener('hashchange', route)
  listen()
  loadNotices()
  loadUploads()
  route()
}

start()
