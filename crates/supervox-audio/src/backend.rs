//! The cpal-backed microphone source and loudspeaker sink.
//!
//! Each open device gets a dedicated thread that finds the device, negotiates a stream
//! configuration, builds and starts the cpal stream, and then owns it (cpal's `Stream` is
//! not `Send` on every platform) until the source or sink is dropped. The stream callback
//! and the 20 ms media clock meet in a [`SampleRing`].
//!
//! * Capture: callback → sample format to `f32` → mix down to mono → resample to 48 kHz →
//!   `i16` → ring (48 kHz mono) → [`FrameSource::next_frame`].
//! * Playback: [`FrameSink::write_frame`] → resample 48 kHz to the device rate → ring
//!   (device-rate mono) → callback → copy to every channel → device sample format.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{
    BufferSize, Device, FromSample, Host, SampleFormat, SizedSample, StreamConfig, SupportedBufferSize,
    SupportedStreamConfig, SupportedStreamConfigRange,
};

use supervox_media::device::Direction;
use supervox_media::sink::FrameSink;
use supervox_media::source::FrameSource;
use supervox_media::{MediaError, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE};

use crate::convert::{downmix, f32_to_i16, i16_to_f32, upmix, Resampler};
use crate::ring::{RingStats, SampleRing};
use crate::RING_MS;

/// How long opening a device may take before we give up on it.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Requested device period: 10 ms keeps the device's own buffering small.
const PERIOD_MS: u32 = 10;
/// Longest wait in [`FrameSink::finish`] for queued audio to play out.
const DRAIN_LIMIT: Duration = Duration::from_millis(250);
/// ALSA's always-present discard/zero device, which is not a sound card.
const NULL_DEVICE: &str = "null";

/// What the device thread reports once the stream is running.
struct Opened {
    ring: Arc<SampleRing>,
    label: String,
    rate: u32,
    channels: u16,
    format: SampleFormat,
}

/// The thread that owns a running cpal stream; dropping it stops the stream.
struct StreamThread {
    /// Dropping the sender wakes the thread, which then drops the stream and exits.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for StreamThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A panic on the device thread has already been reported by the panic hook.
            let _ = thread.join();
        }
    }
}

/// The backend-specific identifier of a device (the ALSA PCM name on Linux).
fn device_id(device: &Device) -> Option<String> {
    device.id().ok().map(|id| id.id().to_owned())
}

fn device_label(device: &Device) -> String {
    match (device_id(device), device.description()) {
        (Some(id), Ok(desc)) if desc.name() != id => format!("{id} ({})", desc.name()),
        (Some(id), _) => id,
        (None, Ok(desc)) => desc.name().to_owned(),
        (None, Err(_)) => device.to_string(),
    }
}

fn supports(device: &Device, dir: Direction) -> bool {
    match dir {
        Direction::Input => device.supports_input(),
        Direction::Output => device.supports_output(),
    }
}

/// Identifiers of the devices the host lists for `dir`, excluding ALSA's `null` device.
pub(crate) fn device_ids(dir: Direction) -> Vec<String> {
    let host = cpal::default_host();
    list(&host, dir).iter().filter_map(device_id).filter(|id| id != NULL_DEVICE).collect()
}

fn list(host: &Host, dir: Direction) -> Vec<Device> {
    match host.devices() {
        Ok(devices) => devices.filter(|d| supports(d, dir)).collect(),
        Err(err) => {
            tracing::debug!("listing {} audio devices failed: {err}", host.id().name());
            Vec::new()
        }
    }
}

/// Finds the default device (`name == None`) or the one called `name`: its identifier
/// (with or without the host prefix), its exact description, or a unique case-insensitive
/// substring of either.
fn find_device(host: &Host, dir: Direction, name: Option<&str>) -> Result<Device, MediaError> {
    let devices = list(host, dir);
    let host_name = host.id().name();
    let Some(name) = name else {
        // Without any listed device (ALSA's null device aside) the default device is an
        // unresolvable alias: opening it only fails noisily, so say so up front.
        if devices.iter().all(|d| device_id(d).as_deref() == Some(NULL_DEVICE)) {
            return Err(dir.error(format!("no audio {} device found ({host_name} reports none)", dir.noun())));
        }
        let default = match dir {
            Direction::Input => host.default_input_device(),
            Direction::Output => host.default_output_device(),
        };
        return default
            .ok_or_else(|| dir.error(format!("no default audio {} device ({host_name} reports none)", dir.noun())));
    };
    let full_id = |d: &Device| d.id().ok().map(|id| id.to_string());
    let desc_name = |d: &Device| d.description().ok().map(|desc| desc.name().to_owned());
    if let Some(d) = devices.iter().find(|d| {
        device_id(d).as_deref() == Some(name)
            || full_id(d).as_deref() == Some(name)
            || desc_name(d).as_deref() == Some(name)
    }) {
        return Ok(d.clone());
    }
    let needle = name.to_lowercase();
    let matches: Vec<&Device> = devices
        .iter()
        .filter(|d| [device_id(d), desc_name(d)].iter().flatten().any(|s| s.to_lowercase().contains(&needle)))
        .collect();
    let available = || {
        let ids: Vec<String> = devices.iter().filter_map(device_id).collect();
        if ids.is_empty() {
            "none".to_owned()
        } else {
            ids.join(", ")
        }
    };
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(dir.error(format!("no audio {} device named {name:?} (available: {})", dir.noun(), available()))),
        _ => Err(dir.error(format!(
            "audio {} device name {name:?} is ambiguous (matches: {})",
            dir.noun(),
            matches.iter().filter_map(|d| device_id(d)).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Preference of a sample format: native 16-bit or float first; `None` if unsupported.
fn format_rank(format: SampleFormat) -> Option<u8> {
    match format {
        SampleFormat::I16 | SampleFormat::F32 => Some(3),
        SampleFormat::I32 | SampleFormat::F64 => Some(2),
        SampleFormat::I8 | SampleFormat::U8 | SampleFormat::U16 | SampleFormat::U32 => Some(1),
        SampleFormat::I64 | SampleFormat::U64 => Some(0),
        _ => None,
    }
}

/// Picks the best configuration: 48 kHz if possible (else the closest rate offered), then
/// i16/f32, then the fewest channels (mono best).
fn choose_config(ranges: impl Iterator<Item = SupportedStreamConfigRange>) -> Option<SupportedStreamConfig> {
    ranges
        .filter(|r| r.channels() > 0 && format_rank(r.sample_format()).is_some() && r.min_sample_rate() > 0)
        .filter_map(|r| {
            let rate = SAMPLE_RATE.clamp(r.min_sample_rate(), r.max_sample_rate().max(r.min_sample_rate()));
            let key = (rate.abs_diff(SAMPLE_RATE), std::cmp::Reverse(format_rank(r.sample_format())), r.channels());
            Some((key, r.try_with_sample_rate(rate)?))
        })
        .min_by_key(|(key, _)| *key)
        .map(|(_, config)| config)
}

fn negotiate(device: &Device, dir: Direction) -> Result<SupportedStreamConfig, cpal::Error> {
    let ranges = match dir {
        Direction::Input => device.supported_input_configs().map(|r| r.collect::<Vec<_>>()),
        Direction::Output => device.supported_output_configs().map(|r| r.collect::<Vec<_>>()),
    };
    match ranges.map(|r| choose_config(r.into_iter())) {
        Ok(Some(config)) => Ok(config),
        // No usable range listed (or listing failed): take the device's default.
        _ => match dir {
            Direction::Input => device.default_input_config(),
            Direction::Output => device.default_output_config(),
        },
    }
}

/// Requests a [`PERIOD_MS`] period where the device states a range that allows it.
fn stream_config(supported: &SupportedStreamConfig) -> StreamConfig {
    let mut config = supported.config();
    if let SupportedBufferSize::Range { min, max } = *supported.buffer_size() {
        let period = supported.sample_rate() * PERIOD_MS / 1000;
        if min <= max && (min..=max).contains(&period) {
            config.buffer_size = BufferSize::Fixed(period);
        }
    }
    config
}

/// Logs stream errors, at most the first few and then every 100th.
fn error_callback(dir: Direction, label: String) -> impl FnMut(cpal::Error) + Send + 'static {
    let count = AtomicU64::new(0);
    move |err| {
        let n = count.fetch_add(1, Ordering::Relaxed);
        if n < 5 || n.is_multiple_of(100) {
            tracing::warn!("audio {} device {label}: stream error #{}: {err}", dir.noun(), n + 1);
        }
    }
}

fn build_input<T>(
    device: &Device,
    config: &StreamConfig,
    ring: Arc<SampleRing>,
    label: &str,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let channels = usize::from(config.channels);
    let Some(mut resampler) = Resampler::new(config.sample_rate, SAMPLE_RATE) else {
        return Err(cpal::Error::with_message(
            cpal::ErrorKind::UnsupportedConfig,
            format!("unusable sample rate {}", config.sample_rate),
        ));
    };
    let (mut samples, mut mono, mut resampled, mut pcm) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let callback = move |data: &[T], _: &cpal::InputCallbackInfo| {
        samples.clear();
        samples.extend(data.iter().map(|&s| f32::from_sample_(s)));
        mono.clear();
        downmix(&samples, channels, &mut mono);
        resampled.clear();
        resampler.process(&mono, &mut resampled);
        pcm.clear();
        pcm.extend(resampled.iter().map(|&s| f32_to_i16(s)));
        ring.push(&pcm);
    };
    device.build_input_stream::<T, _, _>(*config, callback, error_callback(Direction::Input, label.into()), None)
}

fn build_output<T>(
    device: &Device,
    config: &StreamConfig,
    ring: Arc<SampleRing>,
    label: &str,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<f32>,
{
    let channels = usize::from(config.channels);
    let (mut pcm, mut mono, mut interleaved) = (Vec::new(), Vec::new(), Vec::new());
    let callback = move |data: &mut [T], _: &cpal::OutputCallbackInfo| {
        let frames = data.len() / channels.max(1);
        pcm.resize(frames, 0i16);
        ring.pop(&mut pcm);
        mono.clear();
        mono.extend(pcm.iter().map(|&s| i16_to_f32(s)));
        interleaved.resize(frames * channels, 0.0f32);
        upmix(&mono, channels, &mut interleaved);
        for (out, &s) in data.iter_mut().zip(interleaved.iter().chain(std::iter::repeat(&0.0))) {
            *out = T::from_sample_(s);
        }
    };
    device.build_output_stream::<T, _, _>(*config, callback, error_callback(Direction::Output, label.into()), None)
}

fn build_stream(
    device: &Device,
    dir: Direction,
    format: SampleFormat,
    config: &StreamConfig,
    ring: &Arc<SampleRing>,
    label: &str,
) -> Result<cpal::Stream, cpal::Error> {
    macro_rules! dispatch {
        ($($variant:ident => $ty:ty),*) => {
            match (dir, format) {
                $(
                    (Direction::Input, SampleFormat::$variant) => build_input::<$ty>(device, config, ring.clone(), label),
                    (Direction::Output, SampleFormat::$variant) => build_output::<$ty>(device, config, ring.clone(), label),
                )*
                (_, other) => Err(cpal::Error::with_message(
                    cpal::ErrorKind::UnsupportedConfig,
                    format!("unsupported sample format {other}"),
                )),
            }
        };
    }
    dispatch!(I8 => i8, I16 => i16, I32 => i32, I64 => i64, U8 => u8, U16 => u16, U32 => u32, U64 => u64,
              F32 => f32, F64 => f64)
}

/// Runs on the device thread: finds and opens the device and starts its stream.
fn start(dir: Direction, name: Option<&str>) -> Result<(cpal::Stream, Opened), MediaError> {
    let host = cpal::default_host();
    let device = find_device(&host, dir, name)?;
    let label = device_label(&device);
    let cannot_open = |err: &dyn std::fmt::Display| {
        dir.error(format!("audio {} device {label} could not be opened: {err}", dir.noun()))
    };
    let supported = negotiate(&device, dir).map_err(|e| cannot_open(&e))?;
    let (rate, channels, format) = (supported.sample_rate(), supported.channels(), supported.sample_format());
    if Resampler::new(rate, SAMPLE_RATE).is_none() {
        return Err(cannot_open(&format!("unusable sample rate {rate} Hz")));
    }
    // Capture rings hold 48 kHz audio, playback rings device-rate audio.
    let ring_rate = match dir {
        Direction::Input => SAMPLE_RATE,
        Direction::Output => rate,
    } as usize;
    let frame = ring_rate * FRAME_MS as usize / 1000;
    let ring = Arc::new(SampleRing::new(ring_rate * RING_MS as usize / 1000, 2 * frame));
    let mut config = stream_config(&supported);
    let stream = match build_stream(&device, dir, format, &config, &ring, &label) {
        Err(err) if config.buffer_size != BufferSize::Default => {
            tracing::debug!("audio device {label}: fixed period refused ({err}); using the default");
            config.buffer_size = BufferSize::Default;
            build_stream(&device, dir, format, &config, &ring, &label)
        }
        other => other,
    }
    .map_err(|e| cannot_open(&e))?;
    stream.play().map_err(|e| cannot_open(&e))?;
    Ok((stream, Opened { ring, label, rate, channels, format }))
}

/// Opens the device on its own thread and waits (bounded) for the stream to start.
fn spawn(dir: Direction, name: Option<&str>) -> Result<(StreamThread, Opened), MediaError> {
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let owned_name = name.map(str::to_owned);
    let thread = std::thread::Builder::new()
        .name(format!("supervox-{}", dir.short()))
        .spawn(move || match start(dir, owned_name.as_deref()) {
            Ok((stream, opened)) => {
                if ready_tx.send(Ok(opened)).is_ok() {
                    // Blocks until the owner drops the sender.
                    let _ = stop_rx.recv();
                }
                drop(stream);
            }
            Err(err) => {
                let _ = ready_tx.send(Err(err));
            }
        })
        .map_err(|e| dir.error(format!("cannot start the audio {} thread: {e}", dir.noun())))?;
    match ready_rx.recv_timeout(OPEN_TIMEOUT) {
        Ok(Ok(opened)) => {
            tracing::info!(
                "audio {} device {}: {} Hz, {} channel(s), {}{}",
                dir.noun(),
                opened.label,
                opened.rate,
                opened.channels,
                opened.format,
                if opened.rate == SAMPLE_RATE { "" } else { ", resampled to/from 48000 Hz" }
            );
            Ok((StreamThread { stop: Some(stop_tx), thread: Some(thread) }, opened))
        }
        Ok(Err(err)) => {
            let _ = thread.join();
            Err(err)
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // Leave the thread behind: it stops its stream by itself once it sees that
            // nobody is waiting (the stop sender is dropped here).
            Err(dir.error(format!("audio {} device did not start within {OPEN_TIMEOUT:?}", dir.noun())))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let _ = thread.join();
            Err(dir.error(format!("audio {} thread ended unexpectedly", dir.noun())))
        }
    }
}

fn log_stats(dir: Direction, label: &str, stats: RingStats) {
    tracing::debug!(
        "audio {} device {label} closed: {} underflows, {} samples of silence, {} samples dropped",
        dir.noun(),
        stats.underflows,
        stats.silence_samples,
        stats.dropped_samples
    );
}

/// Microphone capture as 48 kHz mono frames.
pub(crate) struct DeviceSource {
    ring: Arc<SampleRing>,
    label: String,
    // Dropped after the fields above; stops the stream.
    _thread: StreamThread,
}

impl DeviceSource {
    /// Opens the default input device, or the one called `name`.
    pub(crate) fn open(name: Option<&str>) -> Result<Self, MediaError> {
        let (thread, opened) = spawn(Direction::Input, name)?;
        Ok(DeviceSource { ring: opened.ring, label: opened.label, _thread: thread })
    }

    /// Bridge counters so far.
    #[cfg(test)]
    fn stats(&self) -> RingStats {
        self.ring.stats()
    }
}

impl FrameSource for DeviceSource {
    fn next_frame(&mut self) -> Vec<i16> {
        let mut frame = vec![0; FRAME_SAMPLES];
        self.ring.pop(&mut frame);
        frame
    }
}

impl Drop for DeviceSource {
    fn drop(&mut self) {
        log_stats(Direction::Input, &self.label, self.ring.stats());
    }
}

/// Loudspeaker playback of 48 kHz mono frames.
pub(crate) struct DeviceSink {
    ring: Arc<SampleRing>,
    label: String,
    resampler: Resampler,
    samples: Vec<f32>,
    resampled: Vec<f32>,
    pcm: Vec<i16>,
    /// `None` once finished.
    thread: Option<StreamThread>,
}

impl DeviceSink {
    /// Opens the default output device, or the one called `name`.
    pub(crate) fn open(name: Option<&str>) -> Result<Self, MediaError> {
        let (thread, opened) = spawn(Direction::Output, name)?;
        let resampler = Resampler::new(SAMPLE_RATE, opened.rate).ok_or_else(|| {
            Direction::Output.error(format!("audio output device {}: unusable sample rate", opened.label))
        })?;
        Ok(DeviceSink {
            ring: opened.ring,
            label: opened.label,
            resampler,
            samples: Vec::new(),
            resampled: Vec::new(),
            pcm: Vec::new(),
            thread: Some(thread),
        })
    }

    /// Bridge counters so far.
    #[cfg(test)]
    fn stats(&self) -> RingStats {
        self.ring.stats()
    }
}

impl FrameSink for DeviceSink {
    fn write_frame(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        if self.thread.is_none() {
            return Err(MediaError::SinkFinished);
        }
        self.samples.clear();
        self.samples.extend(pcm.iter().map(|&s| i16_to_f32(s)));
        self.resampled.clear();
        self.resampler.process(&self.samples, &mut self.resampled);
        self.pcm.clear();
        self.pcm.extend(self.resampled.iter().map(|&s| f32_to_i16(s)));
        self.ring.push(&self.pcm);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), MediaError> {
        if let Some(thread) = self.thread.take() {
            // Let queued audio play out, briefly.
            let deadline = Instant::now() + DRAIN_LIMIT;
            let mut last = self.ring.len();
            while last > 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
                let now = self.ring.len();
                if now == last && self.ring.stats().delivered == 0 {
                    break; // Never started playing: nothing will drain.
                }
                last = now;
            }
            drop(thread);
        }
        Ok(())
    }
}

impl Drop for DeviceSink {
    fn drop(&mut self) {
        log_stats(Direction::Output, &self.label, self.ring.stats());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(channels: u16, min: u32, max: u32, format: SampleFormat) -> SupportedStreamConfigRange {
        SupportedStreamConfigRange::new(channels, min, max, SupportedBufferSize::Unknown, format)
    }

    #[test]
    fn config_choice_prefers_48k_then_format_then_mono() {
        let pick = |ranges: Vec<SupportedStreamConfigRange>| {
            let c = choose_config(ranges.into_iter()).unwrap();
            (c.channels(), c.sample_rate(), c.sample_format())
        };
        assert_eq!(
            pick(vec![
                range(2, 44_100, 44_100, SampleFormat::I16),
                range(2, 8_000, 96_000, SampleFormat::I32),
                range(1, 8_000, 96_000, SampleFormat::F32),
                range(2, 8_000, 96_000, SampleFormat::F32),
            ]),
            (1, 48_000, SampleFormat::F32)
        );
        assert_eq!(
            pick(vec![range(2, 44_100, 44_100, SampleFormat::I16), range(4, 96_000, 192_000, SampleFormat::I16)]),
            (2, 44_100, SampleFormat::I16)
        );
        assert_eq!(pick(vec![range(6, 8_000, 32_000, SampleFormat::U8)]), (6, 32_000, SampleFormat::U8));
        assert!(choose_config(vec![range(2, 48_000, 48_000, SampleFormat::I24)].into_iter()).is_none());
        assert!(choose_config(vec![range(0, 48_000, 48_000, SampleFormat::I16)].into_iter()).is_none());
    }

    /// ALSA's `null` PCM exists on every Linux machine, sound card or not: it exercises the
    /// whole path (device thread, negotiation, stream, callback, ring, stop on drop).
    #[cfg(target_os = "linux")]
    #[test]
    fn null_device_runs_end_to_end() {
        let mut mic = DeviceSource::open(Some(NULL_DEVICE)).expect("ALSA null capture device");
        assert!(mic.label.starts_with(NULL_DEVICE), "{}", mic.label);
        let mut speaker = DeviceSink::open(Some(NULL_DEVICE)).expect("ALSA null playback device");
        let tone: Vec<i16> = (0..FRAME_SAMPLES).map(|i| ((i % 48) as i16 - 24) * 500).collect();
        let start = Instant::now();
        for tick in 1..=10u32 {
            let frame = mic.next_frame();
            assert_eq!(frame.len(), FRAME_SAMPLES);
            assert!(frame.iter().all(|&s| s == 0), "the null device captures zeros");
            speaker.write_frame(&tone).unwrap();
            let due = start + Duration::from_millis(u64::from(tick) * FRAME_MS);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        // The ring stays bounded however fast or slow the null device runs.
        assert!(mic.ring.len() <= mic.ring.capacity());
        assert!(speaker.ring.len() <= speaker.ring.capacity());
        // The callbacks ran: the null capture device produced samples and the null playback
        // device consumed ours. (It is not paced by a clock, so both ring bounds get used.)
        let stats = mic.stats();
        assert!(stats.pushed > 0, "{stats:?}");
        assert_eq!(stats.delivered + stats.silence_samples, 10 * FRAME_SAMPLES as u64, "{stats:?}");
        let stats = speaker.stats();
        assert!(stats.pushed > 0 && stats.delivered > 0, "{stats:?}");
        speaker.finish().unwrap();
        assert!(matches!(speaker.write_frame(&tone), Err(MediaError::SinkFinished)));
        // Dropping stops and joins the device threads promptly.
        let t = Instant::now();
        drop(mic);
        drop(speaker);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
