//! A wasmai guest component for the `wasmai:inference/voice-activity-detector` world: a
//! silero-vad style voice activity detector behind wasi:nn, with WAV decoding, mixdown,
//! resampling, the window loop (recurrent state carried over) and segmentation inside the
//! component. `model.rs` and `vad_config.rs` (rendered by `wasmai build` from the manifest) hold
//! the model's description and audio settings; `audio.rs` the front end; `vad.rs` the window
//! loop and segments; `nn.rs` the wasi-nn calls; `component.rs` (from the tensor template) the
//! `metadata` and `model` exports.
//!
//! Build: `cargo component build --release --locked` (cargo-component generates
//! `src/bindings.rs` from `wit/`).

mod audio;
#[allow(warnings)]
mod bindings;
mod component;
mod model;
mod nn;
mod spec;
mod vad;
mod vad_config;

use bindings::exports::wasmai::inference::voice_activity::{self, Segment, Timings, VadOptions};
use bindings::wasmai::inference::types::Error;
use component::Component;

impl voice_activity::Guest for Component {
    fn default_options() -> VadOptions {
        vad::default_options()
    }

    fn detect(wav: Vec<u8>, options: VadOptions) -> Result<Vec<Segment>, Error> {
        vad::detect(&wav, &options)
    }

    fn probabilities(wav: Vec<u8>) -> Result<Vec<f32>, Error> {
        vad::probabilities(&wav)
    }

    fn last_timings() -> Timings {
        vad::last_timings()
    }
}

bindings::export!(Component with_types_in bindings);
