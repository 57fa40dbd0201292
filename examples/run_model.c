/* Calls a model compiled ahead of time by `ladder compile FILE.lir --target cpu -o model.so`.
 *
 *   cc -O2 -I. examples/run_model.c -o run_model ./model.so -Wl,-rpath,.
 *   ./run_model model.weights
 *
 * Every input is filled with 0.01 * i (as f32; this example handles f32 inputs and outputs), the graph runs
 * once, and the first values of each output are printed, one output per line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s MODEL.weights\n", argv[0]); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *blob = aligned_alloc(64, (size_t)((size + 63) / 64 * 64 + 64));
    if (size > 0 && fread(blob, 1, (size_t)size, f) != (size_t)size) { fprintf(stderr, "short read\n"); return 1; }
    fclose(f);

    void *inputs[LADDER_NUM_INPUTS + 1], *outputs[LADDER_NUM_OUTPUTS + 1], *weights[LADDER_NUM_WEIGHTS + 1];
    for (int i = 0; i < LADDER_NUM_INPUTS; i++) {
        float *x = aligned_alloc(64, (size_t)(ladder_input_bytes[i] + 63) / 64 * 64);
        for (int64_t j = 0; j < ladder_input_bytes[i] / 4; j++) x[j] = 0.01f * (float)j;
        inputs[i] = x;
    }
    for (int i = 0; i < LADDER_NUM_OUTPUTS; i++) outputs[i] = aligned_alloc(64, (size_t)(ladder_output_bytes[i] + 63) / 64 * 64);
    for (int i = 0; i < LADDER_NUM_WEIGHTS; i++) weights[i] = blob + ladder_weight_offsets[i];
    void *scratch = aligned_alloc(64, LADDER_SCRATCH_BYTES);
    int64_t status[LADDER_NUM_STATUS];
    memset(status, 0, sizeof status);

    ladder_main(inputs, outputs, weights, scratch, status, 2);

    for (int i = 0; i < LADDER_NUM_STATUS; i++)
        if (status[i]) { fprintf(stderr, "step %d reported error %lld\n", i, (long long)status[i]); return 1; }
    for (int i = 0; i < LADDER_NUM_OUTPUTS; i++) {
        const float *y = outputs[i];
        int64_t n = ladder_output_bytes[i] / 4;
        for (int64_t j = 0; j < n && j < 8; j++) printf("%s%.9g", j ? " " : "", y[j]);
        printf("\n");
    }
    return 0;
}
