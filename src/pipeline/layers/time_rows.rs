//! The UNet's time embeddings for a batch whose samples may sit at different timesteps
//! (continuous batching): the distinct embedding rows, and for each sample which row is its
//! own. Every product over these rows is taken one row at a time: gemm picks its kernel by
//! the row count, and a sample's result must not depend on how many other samples share the
//! call. Rows shared by several samples (a job's guided pair, its images) are computed once.
//! Never holds activations of the image path.

use candle_core::{Device, Tensor};

use crate::pipeline::error::Result;

pub struct TimeRows {
    /// Distinct rows, each `[1, channels]`.
    distinct: Vec<Tensor>,
    /// For each sample, the index of its row in `distinct`.
    of_sample: Vec<u32>,
}

impl TimeRows {
    /// Groups equal timesteps: returns the distinct values (first-seen order) and, for each
    /// sample, the index of its value.
    pub fn group(timesteps: &[f64]) -> (Vec<f64>, Vec<u32>) {
        let mut distinct: Vec<f64> = Vec::new();
        let mut of_sample = Vec::with_capacity(timesteps.len());
        for &t in timesteps {
            let i = match distinct.iter().position(|d| d.to_bits() == t.to_bits()) {
                Some(i) => i,
                None => {
                    distinct.push(t);
                    distinct.len() - 1
                }
            };
            of_sample.push(i as u32);
        }
        (distinct, of_sample)
    }

    /// `distinct` rows (each `[1, channels]`) and each sample's index into them.
    pub fn new(distinct: Vec<Tensor>, of_sample: Vec<u32>) -> Result<Self> {
        if of_sample.iter().any(|&i| i as usize >= distinct.len()) {
            return Err(candle_core::Error::Msg("time rows: index out of range".into()).into());
        }
        Ok(TimeRows {
            distinct,
            of_sample,
        })
    }

    /// `f` applied to each distinct row on its own, gathered to one row per sample:
    /// `[samples, ..]`.
    pub fn map(&self, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let rows = self.distinct.iter().map(f).collect::<Result<Vec<_>>>()?;
        let rows = Tensor::cat(&rows, 0)?;
        let device: &Device = rows.device();
        let index = Tensor::new(self.of_sample.as_slice(), device)?;
        Ok(rows.index_select(&index, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_equal_timesteps_in_first_seen_order() {
        let (d, idx) = TimeRows::group(&[999.0, 999.0, 5.5, 999.0, 5.5, 1.0]);
        assert_eq!(d, [999.0, 5.5, 1.0]);
        assert_eq!(idx, [0, 0, 1, 0, 1, 2]);
    }

    #[test]
    fn map_gathers_one_row_per_sample() {
        let dev = Device::Cpu;
        let rows = vec![
            Tensor::new(&[[1f32, 2.0]], &dev).unwrap(),
            Tensor::new(&[[3f32, 4.0]], &dev).unwrap(),
        ];
        let t = TimeRows::new(rows, vec![1, 0, 1]).unwrap();
        let out = t.map(|r| Ok((r * 2.0)?)).unwrap();
        assert_eq!(
            out.to_vec2::<f32>().unwrap(),
            [[6.0, 8.0], [2.0, 4.0], [6.0, 8.0]]
        );
        assert!(TimeRows::new(vec![], vec![0]).is_err());
    }
}
