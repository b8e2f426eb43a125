/* bench_train — `netgpt bench train`: the trainer's speed and memory on model shapes people
 * train: (a) GPT-2 124M full fine-tuning, B=4 T=64: forward time, full step time and their
 * ratio (forward + backward + AdamW is ~3 forwards of work in a good trainer); (b) a LLaMA-7B
 * shape with LoRA rank 8 (q, v) on a frozen q4_0 base (f16 where q4_0 matmul is not built),
 * B=1 T=256: one step, peak RSS and where the memory goes. Every result is validated (finite
 * loss, non-zero gradients) before it is timed. Exit status 0 only when both are valid. */
#ifndef NG_BENCH_TRAIN_H
#define NG_BENCH_TRAIN_H

int bench_train_main(int argc, char **argv);

#endif
