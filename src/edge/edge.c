/* edge — the edge tier's HTTP server and request pipeline (see edge.h): context from the store,
 * comprehensive prompt from the edge model or template, privacy scrub, cloud stream relay with
 * fallback to the edge model, telemetry. */
#include "edge/edge.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/kernels.h"
#include "edge/cloud.h"
#include "edge/complete.h"
#include "edge/privacy.h"
#include "edge/store.h"
#include "edge/webui.h"
#include "model/lora.h"
#include "model/model.h"
#include "sample/sampler.h"
#include "serve/body.h"
#include "serve/openai.h"
#include "tokenizer/chat.h"

typedef enum { MODE_EDGE_CLOUD = 0, MODE_CLOUD_ONLY, MODE_EDGE_ONLY } edge_mode;
static const char *const MODE_NAMES[] = {"edge-cloud", "cloud-only", "edge-only"};

struct edge_server {
    edge_config cfg;
    struct MHD_Daemon *d;
    int port;
    ng_model *m;
    ng_lora *lora;        /* the completion adapter, or NULL */
    int model_completion; /* 1: the edge model writes comprehensive prompts; 0: the template */
    pthread_mutex_t model_mu, store_mu;
    edge_store *st;
    cloud_cfg cloud;
    cloud_breaker breaker;
    atomic_int stopping;
    atomic_int workers; /* stream workers running: the model must outlive them */
    atomic_ulong next_id;
};

void edge_config_defaults(edge_config *c) {
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 8081;
    c->completion_tokens = 128;
    c->completion_beams = EDGE_BEAMS;
    c->max_tokens = 128;
    c->connect_timeout_s = 2;
    c->idle_timeout_s = 10;
    c->total_timeout_s = 120;
    c->breaker_threshold = 3;
    c->breaker_cooldown_s = 30;
    c->max_body = 1 << 20;
    c->max_connections = 64;
}

/* ---- small helpers ---------------------------------------------------------------------------- */

static double ms_since(double t0) { return (ng_time() - t0) * 1000; }

/* Copies src into dst[cap], cut at a UTF-8 character boundary when it does not fit. */
static void copy_str(char *dst, size_t cap, const char *src) {
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n && ((unsigned char)src[n] & 0xC0) == 0x80) n--;
    }
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* [A-Za-z0-9_.:-]{1,64}: user and cell ids, as the store takes them. */
static int valid_id(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > STORE_ID_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("_.:-", s[i])) return 0;
    return 1;
}

/* Percent-encodes s (at most max bytes of it) for a response header: headers carry only
 * ASCII, and decodeURIComponent gives the text back in a browser. malloc'd. */
static char *header_encode(const char *s, size_t max) {
    ng_buf b = {0};
    ng_buf_add(&b, "", 0);
    for (size_t i = 0; s[i] && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isalnum(c) || strchr("-_.~ ,:;()", c)) {
            if (c == ' ') ng_buf_add(&b, "%20", 3);
            else ng_buf_add(&b, (const char *)&c, 1);
        } else {
            char e[4];
            snprintf(e, sizeof e, "%%%02X", c);
            ng_buf_add(&b, e, 3);
        }
    }
    return b.s;
}

/* ISO 3166-1 alpha-2 code, then the English name as Intl.DisplayNames (the training data's
 * source) writes it; sorted by code. */
static const char *const COUNTRIES[] = {
    "ADAndorra", "AEUnited Arab Emirates", "AFAfghanistan", "AGAntigua & Barbuda", "AIAnguilla", "ALAlbania",
    "AMArmenia", "AOAngola", "AQAntarctica", "ARArgentina", "ASAmerican Samoa", "ATAustria", "AUAustralia",
    "AWAruba", "AXÅland Islands", "AZAzerbaijan", "BABosnia & Herzegovina", "BBBarbados", "BDBangladesh",
    "BEBelgium", "BFBurkina Faso", "BGBulgaria", "BHBahrain", "BIBurundi", "BJBenin", "BLSt. Barthélemy",
    "BMBermuda", "BNBrunei", "BOBolivia", "BQCaribbean Netherlands", "BRBrazil", "BSBahamas", "BTBhutan",
    "BVBouvet Island", "BWBotswana", "BYBelarus", "BZBelize", "CACanada", "CCCocos (Keeling) Islands",
    "CDCongo - Kinshasa", "CFCentral African Republic", "CGCongo - Brazzaville", "CHSwitzerland",
    "CICôte d’Ivoire", "CKCook Islands", "CLChile", "CMCameroon", "CNChina", "COColombia", "CRCosta Rica",
    "CUCuba", "CVCape Verde", "CWCuraçao", "CXChristmas Island", "CYCyprus", "CZCzechia", "DEGermany",
    "DJDjibouti", "DKDenmark", "DMDominica", "DODominican Republic", "DZAlgeria", "ECEcuador", "EEEstonia",
    "EGEgypt", "EHWestern Sahara", "EREritrea", "ESSpain", "ETEthiopia", "FIFinland", "FJFiji",
    "FKFalkland Islands", "FMMicronesia", "FOFaroe Islands", "FRFrance", "GAGabon", "GBUnited Kingdom",
    "GDGrenada", "GEGeorgia", "GFFrench Guiana", "GGGuernsey", "GHGhana", "GIGibraltar", "GLGreenland",
    "GMGambia", "GNGuinea", "GPGuadeloupe", "GQEquatorial Guinea", "GRGreece",
    "GSSouth Georgia & South Sandwich Islands", "GTGuatemala", "GUGuam", "GWGuinea-Bissau", "GYGuyana",
    "HKHong Kong SAR China", "HMHeard & McDonald Islands", "HNHonduras", "HRCroatia", "HTHaiti", "HUHungary",
    "IDIndonesia", "IEIreland", "ILIsrael", "IMIsle of Man", "INIndia", "IOBritish Indian Ocean Territory",
    "IQIraq", "IRIran", "ISIceland", "ITItaly", "JEJersey", "JMJamaica", "JOJordan", "JPJapan", "KEKenya",
    "KGKyrgyzstan", "KHCambodia", "KIKiribati", "KMComoros", "KNSt. Kitts & Nevis", "KPNorth Korea",
    "KRSouth Korea", "KWKuwait", "KYCayman Islands", "KZKazakhstan", "LALaos", "LBLebanon", "LCSt. Lucia",
    "LILiechtenstein", "LKSri Lanka", "LRLiberia", "LSLesotho", "LTLithuania", "LULuxembourg", "LVLatvia",
    "LYLibya", "MAMorocco", "MCMonaco", "MDMoldova", "MEMontenegro", "MFSt. Martin", "MGMadagascar",
    "MHMarshall Islands", "MKNorth Macedonia", "MLMali", "MMMyanmar (Burma)", "MNMongolia",
    "MOMacao SAR China", "MPNorthern Mariana Islands", "MQMartinique", "MRMauritania", "MSMontserrat",
    "MTMalta", "MUMauritius", "MVMaldives", "MWMalawi", "MXMexico", "MYMalaysia", "MZMozambique",
    "NANamibia", "NCNew Caledonia", "NENiger", "NFNorfolk Island", "NGNigeria", "NINicaragua",
    "NLNetherlands", "NONorway", "NPNepal", "NRNauru", "NUNiue", "NZNew Zealand", "OMOman", "PAPanama",
    "PEPeru", "PFFrench Polynesia", "PGPapua New Guinea", "PHPhilippines", "PKPakistan", "PLPoland",
    "PMSt. Pierre & Miquelon", "PNPitcairn Islands", "PRPuerto Rico", "PSPalestinian Territories",
    "PTPortugal", "PWPalau", "PYParaguay", "QAQatar", "RERéunion", "RORomania", "RSSerbia", "RURussia",
    "RWRwanda", "SASaudi Arabia", "SBSolomon Islands", "SCSeychelles", "SDSudan", "SESweden", "SGSingapore",
    "SHSt. Helena", "SISlovenia", "SJSvalbard & Jan Mayen", "SKSlovakia", "SLSierra Leone", "SMSan Marino",
    "SNSenegal", "SOSomalia", "SRSuriname", "SSSouth Sudan", "STSão Tomé & Príncipe", "SVEl Salvador",
    "SXSint Maarten", "SYSyria", "SZEswatini", "TCTurks & Caicos Islands", "TDChad",
    "TFFrench Southern Territories", "TGTogo", "THThailand", "TJTajikistan", "TKTokelau", "TLTimor-Leste",
    "TMTurkmenistan", "TNTunisia", "TOTonga", "TRTürkiye", "TTTrinidad & Tobago", "TVTuvalu", "TWTaiwan",
    "TZTanzania", "UAUkraine", "UGUganda", "UMU.S. Outlying Islands", "USUnited States", "UYUruguay",
    "UZUzbekistan", "VAVatican City", "VCSt. Vincent & Grenadines", "VEVenezuela",
    "VGBritish Virgin Islands", "VIU.S. Virgin Islands", "VNVietnam", "VUVanuatu", "WFWallis & Futuna",
    "WSSamoa", "XKKosovo", "YEYemen", "YTMayotte", "ZASouth Africa", "ZMZambia", "ZWZimbabwe",
};

const char *edge_country_name(const char *code) {
    if (!code || strlen(code) != 2) return code ? code : "";
    size_t lo = 0, hi = sizeof COUNTRIES / sizeof COUNTRIES[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strncmp(COUNTRIES[mid], code, 2);
        if (c == 0) return COUNTRIES[mid] + 2;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return code;
}

/* ---- context ---------------------------------------------------------------------------------- */

/* What a request says about its user, beyond the OpenAI fields. */
typedef struct {
    char user[STORE_ID_MAX + 1], cell[STORE_ID_MAX + 1], name[128];
    int has_loc;
    double lat, lon;
    edge_mode mode;
} edge_opts;

/* Which store categories a concise prompt asks about: words that start a word of the prompt
 * (so "eat" matches "eating" but not "great"). The completion adapter is trained on contexts
 * that list the POIs of the request's categories only. */
static const struct {
    const char *category;
    const char *words[10];
} CATEGORY_WORDS[] = {
    {"cafe", {"coffee", "cafe", "café", "latte", "caffeine", "espresso", "cappuccino", "tea"}},
    {"restaurant", {"eat", "food", "hungry", "dinner", "lunch", "restaurant", "meal", "breakfast", "brunch"}},
    {"fast_food", {"bite", "burger", "fast food", "fast-food", "fries", "pizza"}},
    {"supermarket", {"grocer", "supermarket", "milk", "bread"}},
    {"convenience", {"snack", "water", "convenience"}},
    {"pharmacy", {"pharmac", "medicine", "chemist", "painkiller", "drugstore", "sick", "allerg", "plaster", "headache"}},
    {"fuel", {"fuel", "petrol", "gas station", "diesel", "refuel", "fill up", "charge my car"}},
    {"hotel", {"hotel", "sleep", "room", "stay", "accommodation"}},
    {"bank", {"cash", "atm", "bank", "withdraw", "money"}},
    {"clothes", {"clothes", "jacket", "shop", "gift", "shoes"}},
    {"electronics", {"charger", "phone", "headphone", "electronics", "laptop"}},
};

/* Up to two categories the prompt names, in the table's order. */
static int prompt_categories(const char *concise, const char *out[2]) {
    int n = 0;
    size_t len = strlen(concise);
    for (size_t c = 0; c < sizeof CATEGORY_WORDS / sizeof CATEGORY_WORDS[0] && n < 2; c++) {
        int hit = 0;
        for (int w = 0; w < 10 && CATEGORY_WORDS[c].words[w] && !hit; w++) {
            const char *word = CATEGORY_WORDS[c].words[w];
            size_t wl = strlen(word);
            for (size_t i = 0; i + wl <= len && !hit; i++)
                hit = (i == 0 || !isalnum((unsigned char)concise[i - 1])) && !strncasecmp(concise + i, word, wl);
        }
        if (hit) out[n++] = CATEGORY_WORDS[c].category;
    }
    return n;
}

/* "this morning", "yesterday", "3 days ago", ... as the training data words a visit's time;
 * both times are local (seconds since the epoch shifted by the place's offset). */
static void visit_when(int64_t now, int64_t then, char *out, size_t cap) {
    int64_t days = now / 86400 - then / 86400;
    int hour = (int)((then % 86400 + 86400) % 86400 / 3600);
    if (days <= 0) snprintf(out, cap, "%s", hour < 12 ? "this morning" : "today");
    else if (days == 1) snprintf(out, cap, "%s", hour >= 18 ? "last night" : "yesterday");
    else if (days < 7) snprintf(out, cap, "%d days ago", (int)days);
    else if (days < 14) snprintf(out, cap, "last week");
    else snprintf(out, cap, "%d weeks ago", (int)(days / 7));
}

static void poi_of(const store_place *p, edge_poi *out) {
    copy_str(out->category, sizeof out->category, p->kind == STORE_POI ? p->category : "city");
    copy_str(out->name, sizeof out->name, p->brand[0] ? p->brand : p->name);
    out->dist_m = (int)lround(p->distance_m);
}

/* Fills c from the store for the request's user, position and cell at time now (Unix seconds).
 * A store error leaves that part of the context empty: a request is still answered. */
static void fill_context(edge_server *s, const edge_opts *o, const char *concise, int64_t now, edge_context *c) {
    memset(c, 0, sizeof *c);
    ng_error err;
    store_user u;
    pthread_mutex_lock(&s->store_mu);
    int have_user = o->user[0] && store_get_user(s->st, o->user, &u, &err) == NG_OK;
    int has_loc = o->has_loc;
    double lat = o->lat, lon = o->lon;
    if (!has_loc && have_user && u.has_home) has_loc = 1, lat = u.home_lat, lon = u.home_lon;
    int offset_s = 0;
    copy_str(c->place, sizeof c->place, "unknown");
    if (has_loc) {
        /* the place a person would name: the nearest city centre is often a suburb's (the Eiffel
         * Tower is nearer Neuilly's centre than Paris's), so nearby cities are weighed by
         * population over squared distance */
        store_query q = {.lat = lat, .lon = lon, .radius_m = 30000, .kind = STORE_CITY, .limit = 10};
        store_place near[10], city;
        int n = 0;
        if (store_nearest(s->st, &q, near, &n, &err) != NG_OK) n = 0;
        if (n == 0) {
            q.radius_m = 0, q.limit = 1; /* nothing within 30 km: the nearest, wherever */
            if (store_nearest(s->st, &q, near, &n, &err) != NG_OK) n = 0;
        }
        double best = -1;
        for (int i = 0; i < n; i++) {
            double km = near[i].distance_m / 1000 + 1, w = (double)(near[i].population + 1) / (km * km);
            if (w > best) best = w, city = near[i];
        }
        if (n > 0) {
            snprintf(c->place, sizeof c->place, "%.80s, %.44s", city.name, edge_country_name(city.country));
            store_localtime lt;
            if (store_local_time(s->st, city.id, now, &lt, &err) == NG_OK) offset_s = lt.offset_s;
        }
        store_cell cell;
        int found = 0;
        if (!o->cell[0] && store_cell_at(s->st, lat, lon, &cell, &found, &err) == NG_OK && found && cell.inside)
            copy_str(c->cell, sizeof c->cell, cell.id);
        const char *cats[2];
        int nc = prompt_categories(concise, cats);
        store_place p[4];
        /* like the training contexts: 1-3 POIs of each category asked about, at most 4 in all;
         * a prompt that names none gets the nearest few of any kind */
        for (int k = 0; k < (nc ? nc : 1); k++) {
            store_query pq = {.lat = lat, .lon = lon, .radius_m = STORE_POI_RADIUS_M, .kind = STORE_POI,
                              .category = nc ? cats[k] : NULL, .limit = nc == 1 ? 3 : nc == 2 ? 2 : 4};
            if (store_nearest(s->st, &pq, p, &n, &err) != NG_OK) continue;
            for (int i = 0; i < n && c->n_poi < EDGE_MAX_POI; i++) poi_of(&p[i], &c->poi[c->n_poi++]);
        }
    }
    if (o->cell[0]) copy_str(c->cell, sizeof c->cell, o->cell);
    else if (!c->cell[0] && s->cfg.cell) copy_str(c->cell, sizeof c->cell, s->cfg.cell);
    time_t local = (time_t)(now + offset_s);
    struct tm tm;
    gmtime_r(&local, &tm);
    strftime(c->local_time, sizeof c->local_time, "%A %H:%M", &tm);
    if (have_user) {
        copy_str(c->prefs, sizeof c->prefs, u.preferences);
        copy_str(c->language, sizeof c->language, u.language);
        store_visit v[2];
        int n = 0;
        if (store_recent_visits(s->st, o->user, v, 2, &n, &err) == NG_OK)
            for (int i = 0; i < n && c->n_recent < EDGE_MAX_RECENT; i++) {
                v[i].place.distance_m = 0;
                poi_of(&v[i].place, &c->recent[c->n_recent]);
                visit_when(now + offset_s, v[i].time + offset_s, c->recent_when[c->n_recent], sizeof c->recent_when[0]);
                c->n_recent++;
            }
    }
    pthread_mutex_unlock(&s->store_mu);
}

/* The privacy rules of a request: its user id and the profile name, whole and word by word. */
typedef struct {
    privacy_rules r;
    const char *names[9];
    char words[128];
} request_rules;

static void rules_init(request_rules *rr, const edge_opts *o) {
    memset(rr, 0, sizeof *rr);
    rr->r.user_id = o->user[0] ? o->user : NULL;
    rr->r.names = rr->names;
    if (!o->name[0]) return;
    rr->names[rr->r.n_names++] = o->name;
    copy_str(rr->words, sizeof rr->words, o->name);
    char *save = NULL;
    for (char *w = strtok_r(rr->words, " \t,", &save); w && rr->r.n_names < 9; w = strtok_r(NULL, " \t,", &save))
        if (strlen(w) >= 2) rr->names[rr->r.n_names++] = w;
}

static void report_add(privacy_report *a, const privacy_report *b) {
    a->emails += b->emails, a->phones += b->phones, a->coords += b->coords;
    a->user_ids += b->user_ids, a->names += b->names;
}

/* ---- the edge model's own answers ------------------------------------------------------------- */

typedef int (*emit_fn)(void *ud, const char *text, size_t n);

/* Continues prompt with the edge model (base weights: the completion adapter is trained for
 * prompts, not answers): up to max_tokens sampled tokens handed to emit as whole UTF-8
 * characters; emit returning nonzero stops. A prompt too long for the context loses its oldest
 * tokens. *n_prompt gets the prompt's tokens, *finish "stop" or "length". Tokens made, or -1 +
 * err. Call with model_mu held. */
static int edge_generate(edge_server *s, const char *prompt, int max_tokens, const ng_sampler_params *sp,
                         emit_fn emit, void *ud, int *n_prompt, const char **finish, ng_error *err) {
    const ng_model *m = s->m;
    int n_ctx = m->hp.n_ctx, n = 0, made = 0;
    if (max_tokens > n_ctx / 2) max_tokens = n_ctx / 2; /* leaves the prompt half the context */
    if (max_tokens < 1) max_tokens = 1;
    int *ids = tok_encode(m->tok, prompt, strlen(prompt), &n);
    int keep = n_ctx - max_tokens, off = n > keep ? n - keep : 0;
    if (n - off == 0) { /* an empty prompt starts a document */
        free(ids);
        ids = xmalloc(sizeof *ids);
        ids[0] = tok_bos(m->tok) >= 0 ? tok_bos(m->tok) : tok_eos(m->tok);
        n = 1, off = 0;
    }
    *n_prompt = n - off;
    *finish = "length";
    ng_state *st = ng_state_new(m, n - off + max_tokens, n - off < 256 ? n - off : 256);
    float *logits = xmalloc((size_t)m->hp.n_vocab * sizeof *logits);
    int *hist = xmalloc((size_t)max_tokens * sizeof *hist);
    ng_sampler *smp = ng_sampler_new(sp, m->hp.n_vocab);
    ng_buf pend = {0};
    int rc = ng_forward(m, st, ids + off, n - off, logits, 0, err);
    while (rc == NG_OK && made < max_tokens) {
        int t = ng_sampler_sample(smp, logits, hist, made);
        if (t == tok_eos(m->tok)) {
            *finish = "stop";
            break;
        }
        hist[made++] = t;
        size_t len;
        const char *piece = tok_piece(m->tok, t, &len);
        if (piece) ng_buf_add(&pend, piece, len);
        /* a character split over tokens waits for its last byte */
        size_t ready = pend.n - openai_utf8_tail(pend.s, pend.n);
        if (ready) {
            int stop = emit(ud, pend.s, ready);
            memmove(pend.s, pend.s + ready, pend.n - ready + 1);
            pend.n -= ready;
            if (stop) break;
        }
        if (made < max_tokens) rc = ng_forward(m, st, &t, 1, logits, 0, err);
    }
    if (pend.n) emit(ud, pend.s, pend.n);
    free(pend.s);
    ng_sampler_free(smp);
    free(hist);
    free(logits);
    ng_state_free(st);
    free(ids);
    return rc == NG_OK ? made : -1;
}

/* ---- one request ------------------------------------------------------------------------------ */

/* A request from parse to the last byte. A streamed one is shared by the connection's thread
 * (reading out) and a worker (producing), hence the reference count. */
typedef struct {
    edge_server *s;
    struct MHD_Connection *conn;
    edge_mode mode, used; /* asked for, and what answered */
    int chat, stream, include_usage;
    char id[64], model[128];
    openai_meta meta;
    ng_sampler_params sp;
    int max_tokens;
    char *concise;
    char *question;      /* what is answered: the comprehensive prompt (or the concise one) */
    char *uplink_prompt; /* question, scrubbed: the text that goes up */
    char *cloud_body;    /* the whole uplink request body; NULL in edge-only mode */
    edge_context ctx;
    const char *completion; /* "model" | "template" | "none" */
    privacy_report priv;
    double t0, context_ms, edge_ms, first_ms, total_ms;
    int cloud_tried, edge_prompt_tokens, completion_model_tokens, edge_answer_tokens;
    cloud_result cr;
    int fallback;
    char reason[32], error[256];
    const char *finish;
    ng_buf text; /* the answer so far */
    /* hand-off to the connection's thread (streams) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ng_buf out;
    size_t out_off;
    int done, gone, refs;
} job;

static void job_unref(job *j) {
    pthread_mutex_lock(&j->mu);
    int last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (!last) return;
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j->concise);
    free(j->question);
    free(j->uplink_prompt);
    free(j->cloud_body);
    free(j->text.s);
    free(j->out.s);
    free(j);
}

/* The peer closed its end (or the socket failed): the request's work should stop. */
static int client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 1;
    char b;
    ssize_t k = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static int job_gone(job *j) {
    if (atomic_load(&j->s->stopping)) return 1;
    pthread_mutex_lock(&j->mu);
    int gone = j->gone;
    pthread_mutex_unlock(&j->mu);
    /* a streamed job learns it from its reader; a whole one is on the connection's own thread */
    if (!gone && !j->stream && client_gone(j->conn)) gone = j->gone = 1;
    return gone;
}

/* Hands an SSE event (taken) to the connection's thread. */
static void job_push(job *j, char *ev) {
    pthread_mutex_lock(&j->mu);
    ng_buf_add(&j->out, ev, strlen(ev));
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    free(ev);
}

/* One piece of the answer, from the cloud or the edge model. Nonzero: stop, nobody listens. */
static int job_emit(void *ud, const char *t, size_t n) {
    job *j = ud;
    if (n) {
        if (!j->text.n) j->first_ms = ms_since(j->t0);
        ng_buf_add(&j->text, t, n);
        if (j->stream) job_push(j, openai_chunk_sse(&j->meta, t, n, 0, NULL, NULL));
    }
    return job_gone(j);
}

static int job_emit_edge(void *ud, const char *t, size_t n) { return job_emit(ud, t, n); }

/* The "netgpt" extension object: what the edge did. final = 0: what is known before the answer. */
static cJSON *job_ext(const job *j, int final) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "mode", MODE_NAMES[final ? j->used : j->mode]);
    cJSON_AddStringToObject(o, "requested_mode", MODE_NAMES[j->mode]);
    if (final) {
        cJSON_AddBoolToObject(o, "fallback", j->fallback);
        if (j->fallback) cJSON_AddStringToObject(o, "fallback_reason", j->reason);
        if (j->error[0]) cJSON_AddStringToObject(o, "error", j->error);
    }
    cJSON_AddStringToObject(o, "concise_prompt", j->concise);
    cJSON_AddStringToObject(o, "comprehensive_prompt", j->uplink_prompt);
    cJSON_AddStringToObject(o, "completion", j->completion);
    if (j->mode != MODE_CLOUD_ONLY) {
        cJSON_AddStringToObject(o, "place", j->ctx.place);
        cJSON_AddStringToObject(o, "cell", j->ctx.cell);
        cJSON_AddStringToObject(o, "local_time", j->ctx.local_time);
    }
    cJSON *p = cJSON_AddObjectToObject(o, "privacy");
    cJSON_AddNumberToObject(p, "emails", j->priv.emails);
    cJSON_AddNumberToObject(p, "phones", j->priv.phones);
    cJSON_AddNumberToObject(p, "coordinates", j->priv.coords);
    cJSON_AddNumberToObject(p, "user_ids", j->priv.user_ids);
    cJSON_AddNumberToObject(p, "names", j->priv.names);
    cJSON *t = cJSON_AddObjectToObject(o, "telemetry");
    cJSON_AddNumberToObject(t, "context_ms", round(j->context_ms * 100) / 100);
    cJSON_AddNumberToObject(t, "edge_completion_ms", round(j->edge_ms * 100) / 100);
    cJSON_AddNumberToObject(t, "edge_completion_tokens", j->completion_model_tokens);
    if (!final) return o;
    int cloud_answered = j->cloud_tried && j->cr.ttft_s > 0;
    if (cloud_answered) cJSON_AddNumberToObject(t, "cloud_ttft_ms", round(j->cr.ttft_s * 1e5) / 100);
    else cJSON_AddNullToObject(t, "cloud_ttft_ms");
    if (j->text.n) cJSON_AddNumberToObject(t, "ttft_ms", round(j->first_ms * 100) / 100);
    else cJSON_AddNullToObject(t, "ttft_ms");
    cJSON_AddNumberToObject(t, "total_ms", round(j->total_ms * 100) / 100);
    cJSON_AddNumberToObject(t, "uplink_bytes", (double)j->cr.uplink_bytes);
    cJSON_AddNumberToObject(t, "downlink_bytes", (double)j->cr.downlink_bytes);
    cJSON_AddNumberToObject(t, "cloud_prompt_tokens", j->cr.prompt_tokens);
    cJSON_AddNumberToObject(t, "cloud_completion_tokens", j->cr.completion_tokens);
    cJSON_AddNumberToObject(t, "edge_answer_tokens", j->edge_answer_tokens);
    if (j->cloud_tried) cJSON_AddStringToObject(t, "cloud_status", cloud_status_name(j->cr.status));
    return o;
}

static openai_usage job_usage(const job *j) {
    int cloud = j->cloud_tried && j->used != MODE_EDGE_ONLY;
    return (openai_usage){cloud ? j->cr.prompt_tokens : j->edge_prompt_tokens,
                          j->cr.completion_tokens + j->edge_answer_tokens, 0};
}

/* Adds ext (taken) as "netgpt" to a JSON body, or to the JSON of an SSE event "data: {...}\n\n".
 * Returns the new text (malloc'd); json is freed. */
static char *add_ext(char *json, int sse, cJSON *ext) {
    const char *start = sse ? json + 6 : json;
    size_t n = strlen(start) - (sse ? 2 : 0);
    cJSON *o = cJSON_ParseWithLength(start, n);
    free(json);
    if (!o) { /* not reachable with the builders' output; keeps the stream well-formed anyway */
        cJSON_Delete(ext);
        return xstrdup(sse ? "" : "{}");
    }
    cJSON_AddItemToObject(o, "netgpt", ext);
    char *body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    size_t bn = strlen(body);
    char *out = xmalloc(bn + 9);
    snprintf(out, bn + 9, "%s%s%s", sse ? "data: " : "", body, sse ? "\n\n" : "");
    cJSON_free(body);
    return out;
}

/* The answer: from the cloud unless the mode or a fault says the edge; a cloud stream cut
 * mid-answer is finished by the edge model from where it stopped. */
static void job_run(job *j) {
    edge_server *s = j->s;
    j->used = j->mode;
    if (j->mode != MODE_EDGE_ONLY) {
        if (!cloud_breaker_allow(&s->breaker, ng_time())) {
            j->fallback = 1;
            snprintf(j->reason, sizeof j->reason, "breaker_open");
        } else {
            j->cloud_tried = 1;
            cloud_status st = cloud_chat_stream(&s->cloud, j->cloud_body, job_emit, j, &j->cr);
            if (st != CLOUD_ABORTED) {
                /* a 4xx is the request's fault, not the cloud's: it does not count against it */
                int outage = st != CLOUD_OK && !(st == CLOUD_HTTP_ERROR && j->cr.http_status < 500);
                cloud_breaker_report(&s->breaker, !outage, ng_time());
            }
            if (st != CLOUD_OK && st != CLOUD_ABORTED) {
                j->fallback = 1;
                snprintf(j->reason, sizeof j->reason, "%s", cloud_status_name(st));
                snprintf(j->error, sizeof j->error, "%s", j->cr.error);
            }
        }
    }
    if ((j->mode == MODE_EDGE_ONLY || j->fallback) && !job_gone(j)) {
        if (!j->text.n) j->used = MODE_EDGE_ONLY;
        char *p = chat_alpaca_prompt(j->question, "");
        ng_buf prompt = {0};
        ng_buf_add(&prompt, p, strlen(p));
        free(p);
        if (j->text.n) ng_buf_add(&prompt, j->text.s, j->text.n); /* the cut answer, continued */
        ng_error err;
        const char *finish = "stop";
        pthread_mutex_lock(&s->model_mu);
        int made = edge_generate(s, prompt.s, j->max_tokens - j->cr.completion_tokens, &j->sp, job_emit_edge, j,
                                 &j->edge_prompt_tokens, &finish, &err);
        pthread_mutex_unlock(&s->model_mu);
        free(prompt.s);
        if (made < 0) snprintf(j->error, sizeof j->error, "edge model: %.200s", err.msg);
        else j->edge_answer_tokens = made;
        j->finish = finish;
    } else {
        j->finish = j->cr.finish_reason[0] ? (!strcmp(j->cr.finish_reason, "length") ? "length" : "stop") : "stop";
    }
    j->total_ms = ms_since(j->t0);
}

/* A stream's worker: the answer, then the closing events. */
static void *job_worker(void *arg) {
    job *j = arg;
    edge_server *s = j->s;
    job_run(j);
    job_push(j, add_ext(openai_chunk_sse(&j->meta, "", 0, 0, j->finish, NULL), 1, job_ext(j, 1)));
    if (j->include_usage) {
        openai_usage u = job_usage(j);
        job_push(j, openai_chunk_sse(&j->meta, "", 0, 0, NULL, &u));
    }
    job_push(j, xstrdup("data: [DONE]\n\n"));
    pthread_mutex_lock(&j->mu);
    j->done = 1;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    job_unref(j);
    atomic_fetch_sub(&s->workers, 1);
    return NULL;
}

/* ---- HTTP ------------------------------------------------------------------------------------- */

/* Per request (MHD's con_cls): the body as it arrives. */
typedef http_body conn_ctx;

static enum MHD_Result reply(struct MHD_Connection *c, int status, const char *body, const char *ctype) {
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (status == 503) MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

/* The error body `netgpt serve` gives for the same mistake (openai_error_json). */
static enum MHD_Result reply_error(struct MHD_Connection *c, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result reply_error(struct MHD_Connection *c, int status, const char *param, const char *fmt, ...) {
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *json = openai_error_json(status, msg, param);
    enum MHD_Result ok = reply(c, status, json, "application/json");
    free(json);
    return ok;
}

static int opt_error(openai_error *e, const char *param, const char *msg) {
    e->status = 400;
    snprintf(e->param, sizeof e->param, "%s", param);
    snprintf(e->message, sizeof e->message, "%s", msg);
    return NG_ERR;
}

static int parse_mode(const char *v, edge_mode *m) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(v, MODE_NAMES[i])) return *m = (edge_mode)i, 1;
    return 0;
}

static int parse_coord(const char *v, double lim, double *out) {
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= -lim && d <= lim)) return 0;
    *out = d;
    return 1;
}

#define MSG_ID "must be 1-64 of [A-Za-z0-9_.:-]"
#define MSG_MODE "must be \"edge-cloud\", \"cloud-only\" or \"edge-only\""

/* The edge's extension of a request: X-Netgpt-* headers, then the body's "netgpt" object (which
 * wins where both say something). */
static int parse_opts(struct MHD_Connection *c, const char *body, size_t len, edge_opts *o, openai_error *e) {
    memset(o, 0, sizeof *o);
    o->mode = MODE_EDGE_CLOUD;
    const char *h;
    int has_lat = 0, has_lon = 0;
    if ((h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Netgpt-User"))) {
        if (!valid_id(h)) return opt_error(e, "X-Netgpt-User", "the X-Netgpt-User header " MSG_ID);
        copy_str(o->user, sizeof o->user, h);
    }
    if ((h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Netgpt-Cell"))) {
        if (!valid_id(h)) return opt_error(e, "X-Netgpt-Cell", "the X-Netgpt-Cell header " MSG_ID);
        copy_str(o->cell, sizeof o->cell, h);
    }
    if ((h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Netgpt-Name"))) copy_str(o->name, sizeof o->name, h);
    if ((h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Netgpt-Mode")) && !parse_mode(h, &o->mode))
        return opt_error(e, "X-Netgpt-Mode", "the X-Netgpt-Mode header " MSG_MODE);
    if ((h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Netgpt-Lat"))) {
        if (!parse_coord(h, 90, &o->lat))
            return opt_error(e, "X-Netgpt-Lat", "the X-Netgpt-Lat header must be a latitude in [-90, 90]");
        has_lat = 1;
    }
    if ((h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Netgpt-Lon"))) {
        if (!parse_coord(h, 180, &o->lon))
            return opt_error(e, "X-Netgpt-Lon", "the X-Netgpt-Lon header must be a longitude in [-180, 180]");
        has_lon = 1;
    }
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, "netgpt"), *v;
    int rc = NG_ERR;
    if (x && !cJSON_IsObject(x)) {
        opt_error(e, "netgpt", "'netgpt' must be an object {\"user\", \"lat\", \"lon\", \"cell\", \"name\", \"mode\"}");
        goto done;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(x, "user"))) {
        if (!cJSON_IsString(v) || !valid_id(v->valuestring)) {
            opt_error(e, "netgpt.user", "'netgpt.user' " MSG_ID);
            goto done;
        }
        copy_str(o->user, sizeof o->user, v->valuestring);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(x, "cell"))) {
        if (!cJSON_IsString(v) || !valid_id(v->valuestring)) {
            opt_error(e, "netgpt.cell", "'netgpt.cell' " MSG_ID);
            goto done;
        }
        copy_str(o->cell, sizeof o->cell, v->valuestring);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(x, "name"))) {
        if (!cJSON_IsString(v) || strlen(v->valuestring) >= sizeof o->name) {
            opt_error(e, "netgpt.name", "'netgpt.name' must be a string of at most 127 bytes");
            goto done;
        }
        copy_str(o->name, sizeof o->name, v->valuestring);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(x, "mode")) && !(cJSON_IsString(v) && parse_mode(v->valuestring, &o->mode))) {
        opt_error(e, "netgpt.mode", "'netgpt.mode' " MSG_MODE);
        goto done;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(x, "lat"))) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= -90 && v->valuedouble <= 90)) {
            opt_error(e, "netgpt.lat", "'netgpt.lat' must be a latitude in [-90, 90] (a number)");
            goto done;
        }
        o->lat = v->valuedouble, has_lat = 1;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(x, "lon"))) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= -180 && v->valuedouble <= 180)) {
            opt_error(e, "netgpt.lon", "'netgpt.lon' must be a longitude in [-180, 180] (a number)");
            goto done;
        }
        o->lon = v->valuedouble, has_lon = 1;
    }
    if (has_lat != has_lon) {
        opt_error(e, has_lat ? "netgpt.lon" : "netgpt.lat", "'netgpt.lat' and 'netgpt.lon' go together");
        goto done;
    }
    o->has_loc = has_lat;
    rc = NG_OK;
done:
    cJSON_Delete(root);
    return rc;
}

/* The uplink body: the client's messages scrubbed, its last user message replaced by the
 * scrubbed question, and the client's sampling settings. Nothing else of the request goes up. */
static char *cloud_body(const edge_server *s, const openai_req *q, int last_user, const char *uplink,
                        const privacy_rules *rules, privacy_report *rep, int max_tokens) {
    cJSON *o = cJSON_CreateObject();
    if (s->cfg.cloud_model) cJSON_AddStringToObject(o, "model", s->cfg.cloud_model);
    cJSON *msgs = cJSON_AddArrayToObject(o, "messages");
    for (int i = 0; i < (q->chat ? q->n_msgs : 1); i++) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", q->chat ? q->msgs[i].role : "user");
        if (!q->chat || i == last_user) {
            cJSON_AddStringToObject(m, "content", uplink);
        } else {
            privacy_report r;
            char *t = privacy_scrub(q->msgs[i].content, rules, &r);
            report_add(rep, &r);
            cJSON_AddStringToObject(m, "content", t);
            free(t);
        }
        cJSON_AddItemToArray(msgs, m);
    }
    cJSON_AddBoolToObject(o, "stream", 1);
    cJSON_AddItemToObject(o, "stream_options", cJSON_Parse("{\"include_usage\":true}"));
    cJSON_AddNumberToObject(o, "max_tokens", max_tokens);
    cJSON_AddNumberToObject(o, "temperature", q->temperature);
    cJSON_AddNumberToObject(o, "top_p", q->top_p);
    if (q->has_seed) cJSON_AddNumberToObject(o, "seed", (double)q->seed);
    if (q->n_stop) {
        cJSON *st = cJSON_AddArrayToObject(o, "stop");
        for (int i = 0; i < q->n_stop; i++) cJSON_AddItemToArray(st, cJSON_CreateString(q->stop[i]));
    }
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    char *out = xstrdup(json);
    cJSON_free(json);
    return out;
}

static void add_header_num(struct MHD_Response *r, const char *name, double v) {
    char b[32];
    snprintf(b, sizeof b, "%.2f", v);
    MHD_add_response_header(r, name, b);
}

/* X-Netgpt-* headers: what the body's "netgpt" object says, as far as it is known (final = 0:
 * before a stream's answer). Text is percent-encoded. */
static void add_job_headers(struct MHD_Response *r, const job *j, int final) {
    char b[64];
    MHD_add_response_header(r, "X-Netgpt-Mode", MODE_NAMES[final ? j->used : j->mode]);
    MHD_add_response_header(r, "X-Netgpt-Requested-Mode", MODE_NAMES[j->mode]);
    MHD_add_response_header(r, "X-Netgpt-Completion", j->completion);
    char *enc = header_encode(j->uplink_prompt, 6000);
    MHD_add_response_header(r, "X-Netgpt-Comprehensive-Prompt", enc);
    free(enc);
    if (j->mode != MODE_CLOUD_ONLY) {
        enc = header_encode(j->ctx.place, sizeof j->ctx.place);
        MHD_add_response_header(r, "X-Netgpt-Place", enc);
        free(enc);
    }
    add_header_num(r, "X-Netgpt-Edge-Completion-Ms", j->edge_ms);
    if (!final) return;
    MHD_add_response_header(r, "X-Netgpt-Fallback", j->fallback ? j->reason : "no");
    if (j->cloud_tried && j->cr.ttft_s > 0) add_header_num(r, "X-Netgpt-Cloud-Ttft-Ms", j->cr.ttft_s * 1000);
    add_header_num(r, "X-Netgpt-Total-Ms", j->total_ms);
    snprintf(b, sizeof b, "%zu", j->cr.uplink_bytes);
    MHD_add_response_header(r, "X-Netgpt-Uplink-Bytes", b);
    snprintf(b, sizeof b, "%zu", j->cr.downlink_bytes);
    MHD_add_response_header(r, "X-Netgpt-Downlink-Bytes", b);
    openai_usage u = job_usage(j);
    snprintf(b, sizeof b, "%d", u.prompt_tokens + u.completion_tokens);
    MHD_add_response_header(r, "X-Netgpt-Tokens", b);
}

/* Hands the stream's events to libmicrohttpd as the worker makes them. */
static ssize_t job_read(void *cls, uint64_t pos, char *dst, size_t max) {
    job *j = cls;
    pthread_mutex_lock(&j->mu);
    while (j->out_off == j->out.n && !j->done) {
        if (atomic_load(&j->s->stopping)) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) == ETIMEDOUT && j->out_off == j->out.n &&
            client_gone(j->conn)) {
            j->gone = 1;
            pthread_mutex_unlock(&j->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    ssize_t n;
    if (j->out_off < j->out.n) {
        size_t k = j->out.n - j->out_off < max ? j->out.n - j->out_off : max;
        memcpy(dst, j->out.s + j->out_off, k);
        j->out_off += k;
        n = (ssize_t)k;
    } else {
        n = j->done ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
    }
    pthread_mutex_unlock(&j->mu);
    return n;
}

static void job_read_free(void *cls) {
    job *j = cls;
    pthread_mutex_lock(&j->mu);
    j->gone = 1; /* a stream that ends early (write error, shutdown) stops its worker */
    pthread_mutex_unlock(&j->mu);
    job_unref(j);
}

static enum MHD_Result handle_completion(edge_server *s, struct MHD_Connection *c, conn_ctx *cc, int chat) {
    double t0 = ng_time();
    const char *body = cc->body ? cc->body : "";
    openai_req q;
    openai_error e;
    if (openai_parse(body, cc->len, chat, &q, &e)) return reply_error(c, e.status, e.param, "%s", e.message);
    enum MHD_Result ok;
    job *j = NULL;
    edge_opts o;
    if (parse_opts(c, body, cc->len, &o, &e)) {
        ok = reply_error(c, e.status, e.param, "%s", e.message);
        goto done;
    }
    int last_user = -1;
    for (int i = 0; chat && i < q.n_msgs; i++)
        if (!strcmp(q.msgs[i].role, "user")) last_user = i;
    if (chat && last_user < 0) {
        ok = reply_error(c, 400, "messages", "the edge personalizes the last 'user' message: there is none");
        goto done;
    }
    if (!chat && q.prompt_ids) {
        ok = reply_error(c, 400, "prompt", "the edge personalizes text prompts: token ids cannot be completed here");
        goto done;
    }
    j = xcalloc(1, sizeof *j);
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 1;
    j->s = s;
    j->conn = c;
    j->t0 = t0;
    j->mode = j->used = o.mode;
    j->chat = chat;
    j->stream = q.stream;
    j->include_usage = q.include_usage;
    unsigned long id = atomic_fetch_add(&s->next_id, 1);
    snprintf(j->id, sizeof j->id, "%s-edge-%lx%06lx", chat ? "chatcmpl" : "cmpl", (unsigned long)time(NULL), id);
    copy_str(j->model, sizeof j->model, q.model && q.model[0] ? q.model : s->m->name);
    j->meta = (openai_meta){j->id, j->model, (long)time(NULL), chat};
    j->sp = (ng_sampler_params){.temp = q.temperature, .top_p = q.top_p, .repeat_penalty = 1,
                                .seed = q.has_seed ? q.seed : ((uint64_t)time(NULL) << 20) ^ (id * 0x9E3779B97F4A7C15ull)};
    j->max_tokens = q.max_tokens >= 0 ? q.max_tokens : s->cfg.max_tokens;
    j->concise = xstrdup(chat ? q.msgs[last_user].content : q.prompt ? q.prompt : "");

    /* 1-2: context and the comprehensive prompt (not in cloud-only mode: that is the baseline of
     * what the cloud sees without the edge) */
    if (o.mode != MODE_CLOUD_ONLY) {
        fill_context(s, &o, j->concise, (int64_t)time(NULL), &j->ctx);
        j->context_ms = ms_since(t0);
        double tc = ng_time();
        ng_error err;
        if (s->model_completion) {
            pthread_mutex_lock(&s->model_mu);
            j->question = edge_complete(s->m, s->lora, &j->ctx, j->concise, s->cfg.completion_tokens,
                                        s->cfg.completion_beams, &err);
            if (j->question) {
                int n;
                free(tok_encode(s->m->tok, j->question, strlen(j->question), &n));
                j->completion_model_tokens = n;
            }
            pthread_mutex_unlock(&s->model_mu);
            if (!j->question) snprintf(j->error, sizeof j->error, "edge completion: %.200s", err.msg);
        }
        /* the model said nothing usable: the template still personalizes */
        if (j->question && j->question[0]) j->completion = "model";
        else {
            free(j->question);
            j->question = edge_template_fill(&j->ctx, j->concise);
            j->completion = "template";
        }
        j->edge_ms = ms_since(tc);
    } else {
        j->question = xstrdup(j->concise);
        j->completion = "none";
    }
    /* 3: nothing goes up unscrubbed */
    request_rules rr;
    rules_init(&rr, &o);
    j->uplink_prompt = privacy_scrub(j->question, &rr.r, &j->priv);
    if (o.mode != MODE_EDGE_ONLY)
        j->cloud_body = cloud_body(s, &q, last_user, j->uplink_prompt, &rr.r, &j->priv, j->max_tokens);

    if (!q.stream) {
        job_run(j);
        openai_usage u = job_usage(j);
        char *json = add_ext(openai_response_json(&j->meta, j->text.s ? j->text.s : "", j->text.n, j->finish, &u,
                                                  NULL, 0, NULL, 0),
                             0, job_ext(j, 1));
        struct MHD_Response *r = MHD_create_response_from_buffer(strlen(json), json, MHD_RESPMEM_MUST_FREE);
        if (!r) {
            free(json);
            ok = MHD_NO;
            goto done;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        add_job_headers(r, j, 1);
        ok = MHD_queue_response(c, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        goto done;
    }
    /* 4-5 on a worker; the first event (the role, as OpenAI's first chunk) carries what the edge
     * did so far, so a client sees the comprehensive prompt before the answer */
    job_push(j, add_ext(openai_chunk_sse(&j->meta, "", 0, chat, NULL, NULL), 1, job_ext(j, 0)));
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, job_read, j, job_read_free);
    if (!r) {
        ok = MHD_NO;
        goto done;
    }
    j->refs = 2; /* the response's and the worker's */
    atomic_fetch_add(&s->workers, 1);
    pthread_t th;
    if (pthread_create(&th, NULL, job_worker, j)) {
        atomic_fetch_sub(&s->workers, 1);
        j->refs = 1;
        MHD_destroy_response(r); /* calls job_read_free: the response's reference */
        j = NULL;
        ok = reply_error(c, 503, NULL, "the edge cannot start a worker thread; retry later");
        goto done;
    }
    pthread_detach(th);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    add_job_headers(r, j, 0);
    ok = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    j = NULL; /* the response and the worker own it now */
done:
    if (j) job_unref(j);
    openai_req_free(&q);
    return ok;
}

static enum MHD_Result handle_models(edge_server *s, struct MHD_Connection *c) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", s->m->name);
    cJSON_AddStringToObject(o, "object", "model");
    cJSON_AddNumberToObject(o, "created", 0);
    cJSON_AddStringToObject(o, "owned_by", "netgpt-edge");
    cJSON_AddItemToArray(data, o);
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    enum MHD_Result ok = reply(c, 200, json, "application/json");
    cJSON_free(json);
    return ok;
}

static enum MHD_Result route(edge_server *s, struct MHD_Connection *c, const char *url, const char *method,
                             conn_ctx *cc) {
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    if (!strcmp(url, "/") || !strcmp(url, "/index.html")) {
        if (!get) return reply_error(c, 405, NULL, "use GET on %s", url);
        return reply(c, 200, EDGE_WEBUI_HTML, "text/html; charset=utf-8");
    }
    if (!strcmp(url, "/health")) {
        if (!get) return reply_error(c, 405, NULL, "use GET on %s", url);
        if (atomic_load(&s->stopping)) return reply(c, 503, "{\"status\":\"draining\"}", "application/json");
        return reply(c, 200,
                     cloud_breaker_open(&s->breaker, ng_time()) ? "{\"status\":\"ok\",\"cloud\":\"breaker_open\"}"
                                                                 : "{\"status\":\"ok\",\"cloud\":\"closed\"}",
                     "application/json");
    }
    if (strncmp(url, "/v1/", 4)) return reply_error(c, 404, NULL, "no such endpoint: %s %s", method, url);
    if (atomic_load(&s->stopping)) return reply_error(c, 503, NULL, "the server is shutting down");
    if (cc->too_big)
        return reply_error(c, 413, NULL, "the request body exceeds the limit of %zu bytes", s->cfg.max_body);
    if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/v1/completions")) {
        if (!post) return reply_error(c, 405, NULL, "use POST on %s", url);
        return handle_completion(s, c, cc, url[4] == 'c' && url[5] == 'h');
    }
    if (!strcmp(url, "/v1/models")) return get ? handle_models(s, c) : reply_error(c, 405, NULL, "use GET on %s", url);
    return reply_error(c, 404, NULL, "no such endpoint: %s %s", method, url);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    edge_server *s = cls;
    conn_ctx *cc = *con_cls;
    if (!cc) {
        cc = *con_cls = xcalloc(1, sizeof *cc);
        /* a declared length over the limit is refused before the body is read */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->cfg.max_body) {
            cc->too_big = 1;
            return reply_error(c, 413, NULL, "the request body exceeds the limit of %zu bytes", s->cfg.max_body);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        http_body_add(cc, upload, *upload_size, s->cfg.max_body);
        *upload_size = 0;
        return MHD_YES;
    }
    return route(s, c, url, method, cc);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    conn_ctx *cc = *con_cls;
    if (!cc) return;
    free(cc->body);
    free(cc);
    *con_cls = NULL;
}

/* ---- life cycle ------------------------------------------------------------------------------- */

static void edge_free(edge_server *s) {
    if (s->st) store_close(s->st);
    ng_lora_free(s->lora);
    ng_model_free(s->m);
    pthread_mutex_destroy(&s->model_mu);
    pthread_mutex_destroy(&s->store_mu);
    pthread_mutex_destroy(&s->breaker.mu);
    free(s);
}

edge_server *edge_start(const edge_config *cfg, ng_error *err) {
    if (cfg->completion && strcmp(cfg->completion, "model") && strcmp(cfg->completion, "template")) {
        ng_error_set(err, "--completion '%s' is not 'model' or 'template'", cfg->completion);
        return NULL;
    }
    if (!cfg->cloud_url || (strncmp(cfg->cloud_url, "http://", 7) && strncmp(cfg->cloud_url, "https://", 8))) {
        ng_error_set(err, "--cloud '%s' is not an http:// or https:// URL", cfg->cloud_url ? cfg->cloud_url : "");
        return NULL;
    }
    struct sockaddr_storage ss;
    unsigned flags;
    if (http_listen_addr(cfg->host, cfg->port, &ss, &flags, err)) return NULL;
    edge_server *s = xcalloc(1, sizeof *s);
    s->cfg = *cfg;
    pthread_mutex_init(&s->model_mu, NULL);
    pthread_mutex_init(&s->store_mu, NULL);
    cloud_breaker_init(&s->breaker, cfg->breaker_threshold, cfg->breaker_cooldown_s);
    s->cloud = (cloud_cfg){cfg->cloud_url, cfg->cloud_key, cfg->connect_timeout_s, cfg->idle_timeout_s,
                           cfg->total_timeout_s};
    ng_set_threads(cfg->threads);
    if (!(s->m = ng_model_load(cfg->model_path, err))) goto err;
    if (!s->m->tok) {
        ng_error_set(err, "%s has no tokenizer: the edge needs one", cfg->model_path);
        goto err;
    }
    if (cfg->lora_arg) {
        char *path = NULL;
        float scale = 1;
        if (ng_lora_parse_arg(cfg->lora_arg, &path, &scale, err)) goto err;
        s->lora = ng_lora_load(s->m, path, scale, err);
        free(path);
        if (!s->lora) goto err;
    }
    s->model_completion = cfg->completion ? !strcmp(cfg->completion, "model") : s->lora != NULL;
    if (!(s->st = store_open(cfg->db_path, 0, err))) goto err;
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300,
                            MHD_OPTION_END);
    if (!s->d) {
        ng_error_set(err, "cannot listen on %s port %d: %s", cfg->host, cfg->port, strerror(errno));
        goto err;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    return s;
err:
    edge_free(s);
    return NULL;
}

int edge_port(const edge_server *s) { return s->port; }

const char *edge_completion_kind(const edge_server *s) { return s->model_completion ? "model" : "template"; }

void edge_stop(edge_server *s) {
    if (!s) return;
    atomic_store(&s->stopping, 1);
    MHD_stop_daemon(s->d);
    /* workers notice `stopping` at their next piece of answer; one waiting on a silent cloud
     * ends by the cloud timeouts */
    while (atomic_load(&s->workers) > 0) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    edge_free(s);
}
