// The listening room's waveforms: a record's sound drawn on a canvas from the service's /peaks (the audiowaveform
// JSON format, version 2), its silences marked, the play position shown while it plays; a click or a drag on it
// seeks the record's own <audio>. Peaks are fetched only when the waveform comes near the screen, and revalidated
// with the record's ETag (the browser's cache, `no-cache`). Loaded before room.js, which uses its two globals.
'use strict'

/** A time in seconds as people read a duration: "4:05", "1:02:03", "0:00.3" under a second ("—" if unknown). */
function formatDuration (seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '—'
  if (seconds > 0 && seconds < 0.95) return `0:00.${Math.max(1, Math.round(seconds * 10))}`
  const whole = Math.round(seconds)
  const two = (n) => String(n).padStart(2, '0')
  const [hours, minutes, rest] = [Math.floor(whole / 3600), Math.floor((whole % 3600) / 60), whole % 60]
  return hours ? `${hours}:${two(minutes)}:${two(rest)}` : `${minutes}:${two(rest)}`
}

/** min/max pairs of the peaks' first channel (the others folded in), as {lows, highs, top, secondsPerPixel}. */
function parsePeaks (json) {
  const channels = json.channels || 1
  const length = Math.min(json.length, Math.floor(json.data.length / (2 * channels)))
  const lows = new Int16Array(length)
  const highs = new Int16Array(length)
  let top = 0
  for (let i = 0; i < length; i++) {
    let low = Infinity
    let high = -Infinity
    for (let c = 0; c < channels; c++) {
      low = Math.min(low, json.data[2 * (i * channels + c)])
      high = Math.max(high, json.data[2 * (i * channels + c) + 1])
    }
    lows[i] = low
    highs[i] = high
    top = Math.max(top, -low, high)
  }
  return { lows, highs, top, secondsPerPixel: json.samples_per_pixel / json.sample_rate }
}

// One observer each for all the waveforms: which come near the screen (their peaks are fetched then), and which
// change width (drawn again at the new width) or leave the page (a row removed: forgotten, with its peaks).
const nearScreen = new IntersectionObserver((entries) => {
  for (const entry of entries) if (entry.isIntersecting) entry.target.waveform.visible()
}, { rootMargin: '300px 0px' })
const resized = new ResizeObserver((entries) => {
  for (const { target } of entries) {
    if (target.isConnected) target.waveform.draw()
    else {
      nearScreen.unobserve(target)
      resized.unobserve(target)
      target.waveform.hide()
    }
  }
})

class Waveform {
  /** The waveform of the record that `audio` plays; `node` is its element, shown once `show` gives it a record. */
  constructor (audio) {
    this.audio = audio
    this.canvas = document.createElement('canvas')
    this.canvas.setAttribute('aria-hidden', 'true')
    this.playedCanvas = document.createElement('canvas') // the same waveform in the colour of the part played
    this.played = Object.assign(document.createElement('div'), { className: 'played' })
    this.played.append(this.playedCanvas)
    this.head = Object.assign(document.createElement('div'), { className: 'head' })
    this.silences = Object.assign(document.createElement('div'), { className: 'silences' })
    this.node = Object.assign(document.createElement('div'), { className: 'wave', hidden: true })
    this.node.setAttribute('role', 'img')
    this.node.append(this.canvas, this.silences, this.played, this.head)
    this.node.waveform = this
    this.url = null
    this.etag = null
    this.duration = 0
    this.peaks = null
    this.loading = null
    this.near = false
    this.frame = 0
    this.listen()
    nearScreen.observe(this.node)
    resized.observe(this.node)
  }

  /** Show the waveform of `record` (a listing item whose analysis is done): its silences at once, its peaks when
   * near the screen (fetched again only for a new version). */
  show (record) {
    const url = `/records/${record.event}/${record.start}/peaks`
    const { duration, silences = [] } = record.audio
    this.duration = duration
    this.node.hidden = false
    const list = silences.map((s) => `${formatDuration(s.start)}–${formatDuration(s.end)}`)
    this.node.setAttribute('aria-label', `Waveform of ${formatDuration(duration)}` +
      (list.length ? `; silence at ${list.join(', ')}` : '; no silence') + '. A click on it moves the player there.')
    this.silences.replaceChildren(...silences.map((silence, i) => {
      const mark = Object.assign(document.createElement('span'), { className: 'silence', title: `Silence ${list[i]}` })
      mark.style.left = `${(100 * silence.start) / duration}%`
      mark.style.width = `${(100 * Math.max(0, silence.end - silence.start)) / duration}%`
      return mark
    }))
    if (url !== this.url || record.etag !== this.etag) {
      this.url = url
      this.etag = record.etag
      this.forget()
      this.node.classList.remove('failed')
      this.node.dataset.drawn = ''
      if (this.near) this.load()
    }
    this.position()
  }

  /** Not drawn (the record's analysis is not done). */
  hide () {
    this.node.hidden = true
    this.url = this.etag = null
    this.forget()
  }

  /** No peaks, nothing drawn. */
  forget () {
    this.peaks = null
    this.canvas.width = this.playedCanvas.width = 0
  }

  visible () {
    this.near = true
    if (this.url && !this.peaks) this.load()
  }

  /** Fetch the peaks of the version shown (once at a time), then draw them. */
  async load () {
    const { url, etag } = this
    if (this.loading === `${url} ${etag}`) return
    this.loading = `${url} ${etag}`
    try {
      const response = await fetch(url, { cache: 'no-cache' }) // revalidated: If-None-Match, 304, the cached body
      if (!response.ok) throw new Error(`${response.status}`)
      const peaks = parsePeaks(await response.json())
      if (this.url !== url || this.etag !== etag) return // another version came meanwhile
      this.peaks = peaks
      this.draw()
    } catch (_) {
      if (this.url === url) this.node.classList.add('failed') // it says so; the player still plays
    } finally {
      if (this.loading === `${url} ${etag}`) this.loading = null
    }
  }

  /** Draw the peaks at the canvas's size on screen, one column a device pixel: each column the lowest and highest
   * sample of its time, scaled so that the loudest fills the height; and again in the colour of the part played,
   * on the canvas that `position` uncovers as far as the player has come. */
  draw () {
    const { canvas, peaks } = this
    const ratio = window.devicePixelRatio || 1
    const width = Math.round(canvas.clientWidth * ratio)
    const height = Math.round(canvas.clientHeight * ratio)
    if (!peaks || !width || !height || !this.duration) return
    canvas.width = width
    canvas.height = height
    const context = canvas.getContext('2d')
    context.clearRect(0, 0, width, height)
    context.fillStyle = getComputedStyle(this.node).getPropertyValue('--wave-ink').trim() || '#7f9cc9'
    const { lows, highs, top, secondsPerPixel } = peaks
    const middle = height / 2
    const scale = (middle - ratio) / Math.max(top, 1)
    const perColumn = this.duration / width / secondsPerPixel // peak pixels in a column
    for (let x = 0; x < width; x++) {
      const first = Math.floor(x * perColumn)
      if (first >= lows.length) break
      const end = Math.min(lows.length, Math.max(first + 1, Math.floor((x + 1) * perColumn)))
      let low = lows[first]
      let high = highs[first]
      for (let i = first + 1; i < end; i++) {
        if (lows[i] < low) low = lows[i]
        if (highs[i] > high) high = highs[i]
      }
      const y = middle - high * scale
      context.fillRect(x, y, 1, Math.max(ratio, middle - low * scale - y)) // silence: a hairline
    }
    const played = this.playedCanvas
    played.width = width
    played.height = height
    played.style.width = `${canvas.clientWidth}px`
    const over = played.getContext('2d')
    over.drawImage(canvas, 0, 0)
    over.globalCompositeOperation = 'source-in'
    over.fillStyle = getComputedStyle(this.node).getPropertyValue('--wave-played').trim() || '#0b57d0'
    over.fillRect(0, 0, width, height)
    this.node.dataset.drawn = this.etag
  }

  /** The play position, on the waveform. */
  position () {
    const time = this.audio.currentTime
    const fraction = this.duration ? Math.min(1, Math.max(0, time / this.duration)) : 0
    this.played.style.width = `${100 * fraction}%`
    this.head.style.left = `${100 * fraction}%`
    this.head.hidden = fraction === 0 && this.audio.paused
  }

  /** Play from the time under the pointer: the player seeks there (before it has loaded, it starts there). */
  seek (pointer) {
    const box = this.node.getBoundingClientRect()
    const fraction = Math.min(1, Math.max(0, (pointer.clientX - box.left) / box.width))
    this.audio.currentTime = fraction * this.duration
    this.position()
  }

  listen () {
    const node = this.node
    // The pointer pressed on the waveform. A mouse seeks at once; a finger may be starting to scroll the page, so
    // it seeks once it slides sideways, or when it lifts (a tap); a scroll cancels it.
    let pressed = null
    node.addEventListener('pointerdown', (down) => {
      if (down.button !== 0 || !this.duration) return
      pressed = { id: down.pointerId, x: down.clientX, sliding: down.pointerType === 'mouse' }
      node.setPointerCapture(down.pointerId)
      if (pressed.sliding) this.seek(down)
    })
    node.addEventListener('pointermove', (move) => {
      if (!pressed || move.pointerId !== pressed.id) return
      pressed.sliding = pressed.sliding || Math.abs(move.clientX - pressed.x) > 8
      if (pressed.sliding) this.seek(move)
    })
    node.addEventListener('pointerup', (up) => {
      if (!pressed || up.pointerId !== pressed.id) return
      pressed = null
      this.seek(up)
    })
    node.addEventListener('pointercancel', () => { pressed = null })
    const follow = () => {
      this.position()
      this.frame = this.audio.paused ? 0 : requestAnimationFrame(follow)
    }
    this.audio.addEventListener('play', () => { if (!this.frame) this.frame = requestAnimationFrame(follow) })
    for (const type of ['timeupdate', 'seeking', 'seeked', 'emptied', 'ended']) {
      this.audio.addEventListener(type, () => this.position())
    }
  }
}

// Colours follow the reader's light or dark scheme: draw again when it changes.
matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => {
  for (const node of document.querySelectorAll('.wave')) node.waveform.draw()
})
