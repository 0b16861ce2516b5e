//! The real generator's step-level form: each started job holds its pipeline
//! [`Denoising`] state and its own seeded noise; a step is one UNet call over every job of
//! the batch (`StableDiffusion::predict_batch`), then each job's scheduler step; finished
//! jobs decode together. Never decides who shares a batch (the worker thread does).

use std::any::Any;

use candle_core::Tensor;

use super::sd::{generate_error, reads_a1111, SdGenerator};
use super::step::{downcast, BatchKey, StepGenerator, StepJob};
use super::{GenerateError, GenerateJob};
use crate::pipeline::denoise::Denoising;
use crate::pipeline::noise::SeededNoise;
use crate::pipeline::params::{GeneratedImage, LoraRequest};
use crate::pipeline::StableDiffusion;

struct SdJob {
    key: BatchKey,
    /// The job's LoRAs, to find (or build again) the model its key names.
    loras: Vec<LoraRequest>,
    state: Denoising,
    noise: SeededNoise,
    /// The guided prediction of the current step, between `predict` and `advance`.
    pred: Option<Tensor>,
    mib: u64,
    decode_mib: u64,
}

impl StepJob for SdJob {
    fn key(&self) -> &BatchKey {
        &self.key
    }

    fn steps_done(&self) -> usize {
        self.state.steps_done()
    }

    fn total_steps(&self) -> usize {
        self.state.total_steps()
    }

    fn activation_mib(&self) -> u64 {
        self.mib
    }

    fn finish_mib(&self) -> u64 {
        self.decode_mib
    }

    fn advance(&mut self) -> Result<(), GenerateError> {
        let pred = self
            .pred
            .take()
            .ok_or_else(|| GenerateError::Internal("a step without a prediction".into()))?;
        self.state
            .advance(&pred, &mut self.noise)
            .map_err(generate_error)
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

fn started(
    model: &StableDiffusion,
    job: &GenerateJob,
    loras: &str,
    state: Denoising,
    noise: SeededNoise,
) -> Result<Box<dyn StepJob>, GenerateError> {
    let key = BatchKey {
        model: job.model.path.clone(),
        input: state.unet_input_dims().map_err(generate_error)?,
        context_len: state.context_len().map_err(generate_error)?,
        loras: loras.to_string(),
    };
    let mib = model.unet_activation_mib(&state).map_err(generate_error)?;
    let decode_mib = model
        .decode_activation_mib(&state)
        .map_err(generate_error)?;
    Ok(Box::new(SdJob {
        key,
        loras: job.params.loras.clone(),
        state,
        noise,
        pred: None,
        mib,
        decode_mib,
    }))
}

fn ours(job: &mut dyn StepJob) -> Result<&mut SdJob, GenerateError> {
    downcast::<SdJob>(job)
        .ok_or_else(|| GenerateError::Internal("a job started by another generator".into()))
}

impl StepGenerator for SdGenerator {
    fn start(&mut self, jobs: &[&GenerateJob]) -> Vec<Result<Box<dyn StepJob>, GenerateError>> {
        let mut results: Vec<Option<Result<Box<dyn StepJob>, GenerateError>>> =
            jobs.iter().map(|_| None).collect();
        // Jobs of one model and LoRA set start together (one text-encoder call), set by set.
        for first in 0..jobs.len() {
            if results[first].is_some() {
                continue;
            }
            let (path, loras) = (&jobs[first].model.path, &jobs[first].params.loras);
            let same: Vec<usize> = (first..jobs.len())
                .filter(|&i| {
                    results[i].is_none()
                        && &jobs[i].model.path == path
                        && &jobs[i].params.loras == loras
                })
                .collect();
            let a1111 = same.iter().any(|&i| reads_a1111(jobs[i]));
            let model = match self
                .ensure_loaded(&jobs[first].model)
                .and_then(|()| self.prepare(path, loras, a1111))
            {
                Ok(m) => m,
                Err(e) => {
                    let text = e.to_string();
                    for &i in &same {
                        results[i] = Some(Err(GenerateError::ModelLoad(text.clone())));
                    }
                    continue;
                }
            };
            let (model, set) = (&*model.0, model.1);
            let params: Vec<_> = same.iter().map(|&i| &jobs[i].params).collect();
            for (&i, r) in same.iter().zip(model.start_batch(&params)) {
                results[i] = Some(match r {
                    Ok((state, noise)) => started(model, jobs[i], &set, state, noise),
                    Err(e) => Err(generate_error(e)),
                });
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(GenerateError::Internal("job not started".into()))))
            .collect()
    }

    fn predict(&mut self, batch: &mut [&mut dyn StepJob]) -> Result<(), GenerateError> {
        let Some(first) = batch.first_mut() else {
            return Ok(());
        };
        let path = first.key().model.clone();
        let mut jobs = Vec::with_capacity(batch.len());
        for job in batch.iter_mut() {
            jobs.push(ours(&mut **job)?);
        }
        let (model, _) = self.select(&path, &jobs[0].loras)?;
        let model = &*model;
        let states: Vec<&Denoising> = jobs.iter().map(|j| &j.state).collect();
        let preds = model.predict_batch(&states).map_err(generate_error)?;
        for (job, pred) in jobs.iter_mut().zip(preds) {
            job.pred = Some(pred);
        }
        Ok(())
    }

    fn finish(
        &mut self,
        done: &mut [(&GenerateJob, &mut dyn StepJob)],
    ) -> Vec<Result<Vec<GeneratedImage>, GenerateError>> {
        let fail = |e: &GenerateError| GenerateError::Internal(e.to_string());
        let Some((first, _)) = done.first() else {
            return Vec::new();
        };
        let path = first.model.path.clone();
        let mut jobs = Vec::with_capacity(done.len());
        for (_, job) in done.iter_mut() {
            match ours(&mut **job) {
                Ok(j) => jobs.push(j),
                Err(e) => return done.iter().map(|_| Err(fail(&e))).collect(),
            }
        }
        let loras = jobs[0].loras.clone();
        let decoded = self.select(&path, &loras).and_then(|(model, _)| {
            let states: Vec<&Denoising> = jobs.iter().map(|j| &j.state).collect();
            model.decode_batch(&states).map_err(generate_error)
        });
        match decoded {
            Ok(images) => images.into_iter().map(Ok).collect(),
            Err(e) => done.iter().map(|_| Err(fail(&e))).collect(),
        }
    }
}
