// Prints llama.cpp's greedy tokens and first-step logits for a GGUF file and prompt ids, as JSON
// (scripts/make_parity_fixtures.py builds and runs it).  usage: parity_dump MODEL N_STEPS ID [ID ...]
// or parity_dump MODEL tokenize TEXT [TEXT ...]
#include "llama.h"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
static void quiet(ggml_log_level, const char *, void *) {}
int main(int argc, char ** argv) {
    if (argc < 4) { fprintf(stderr, "usage\n"); return 2; }
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "load failed\n"); return 1; }
    if (std::string(argv[2]) == "tokenize") {  // parity_dump MODEL tokenize TEXT...: llama.cpp's ids, with BOS
        const llama_vocab * v = llama_model_get_vocab(model);
        printf("[");
        for (int a = 3; a < argc; a++) {
            std::vector<llama_token> ids(4096);
            int n = llama_tokenize(v, argv[a], (int) strlen(argv[a]), ids.data(), (int) ids.size(), true, false);
            printf(a > 3 ? ", [" : "[");
            for (int i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
            printf("]");
        }
        printf("]\n");
        return 0;
    }
    int steps = atoi(argv[2]);
    std::vector<llama_token> prompt;
    for (int i = 3; i < argc; i++) prompt.push_back(atoi(argv[i]));
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256; cp.n_batch = 256; cp.n_threads = 1; cp.n_threads_batch = 1; cp.no_perf = true;
    // f32 cache and plain attention: llama.cpp's most exact settings, so the spread left is the weights'
    cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32; cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    llama_context * ctx = llama_init_from_model(model, cp);
    const llama_vocab * vocab = llama_model_get_vocab(model);
    int nv = llama_vocab_n_tokens(vocab);
    llama_batch batch = llama_batch_get_one(prompt.data(), prompt.size());
    if (llama_decode(ctx, batch)) { fprintf(stderr, "decode failed\n"); return 1; }
    const float * lg = llama_get_logits_ith(ctx, -1);
    printf("{\"vocab\": %d, \"logits\": [", nv);
    for (int i = 0; i < nv; i++) printf(i ? ", %.9g" : "%.9g", lg[i]);
    printf("], \"tokens\": [");
    llama_token tok;
    for (int s = 0; s < steps; s++) {
        const float * l = llama_get_logits_ith(ctx, -1);
        int best = 0;
        for (int i = 1; i < nv; i++) if (l[i] > l[best]) best = i;
        tok = best;
        printf(s ? ", %d" : "%d", tok);
        if (s + 1 == steps) break;
        llama_batch b1 = llama_batch_get_one(&tok, 1);
        if (llama_decode(ctx, b1)) { fprintf(stderr, "decode failed\n"); return 1; }
    }
    printf("]}\n");
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
