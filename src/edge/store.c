/* store — SQLite context store of the edge node. See store.h for the contract. */
#include "edge/store.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEG (M_PI / 180.0)
#define SCHEMA_VERSION "1"
#define POI_MIN_POPULATION 5000
#define PROGRESS_EVERY 50000
#define MAX_TIME 253402300799LL /* 9999-12-31T23:59:59Z */

const char *const store_categories[] = {"cafe",     "restaurant", "fast_food", "supermarket",
                                        "convenience", "pharmacy", "fuel",      "hotel",
                                        "bank",     "clothes",    "electronics", NULL};

/* Prepared once on first use, owned by the store, reset before each use. */
enum {
    Q_PLACE_INS,
    Q_RTREE_INS,
    Q_BRAND_INS,
    Q_NEAR,
    Q_PLACE_GET,
    Q_USER_PUT,
    Q_USER_GET,
    Q_VISIT_INS,
    Q_VISITS,
    Q_CELL_PUT,
    Q_CELL_RTREE,
    Q_CELL_HIT,
    Q_CELL_ALL,
    Q_COUNT
};

static const char *const SQL[Q_COUNT] = {
    [Q_PLACE_INS] = "INSERT INTO places(id, kind, name, ascii_name, category, brand, city_id, country, admin1,"
                    " lat, lon, population, tz, std_offset_min) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)",
    [Q_RTREE_INS] = "INSERT INTO places_rtree(id, min_lat, max_lat, min_lon, max_lon) VALUES (?1,?2,?2,?3,?3)",
    [Q_BRAND_INS] = "INSERT INTO brands(category, name, wikidata, weight, countries) VALUES (?1,?2,?3,?4,?5)",
    [Q_NEAR] = "SELECT p.id, p.kind, p.name, p.category, p.brand, p.city_id, p.country, p.lat, p.lon, p.population,"
               " p.tz, p.std_offset_min FROM places_rtree r JOIN places p ON p.id = r.id"
               " WHERE r.max_lat >= ?1 AND r.min_lat <= ?2 AND r.max_lon >= ?3 AND r.min_lon <= ?4"
               " AND (?5 IS NULL OR p.category = ?5) AND (?6 IS NULL OR p.kind = ?6)",
    [Q_PLACE_GET] = "SELECT id, kind, name, category, brand, city_id, country, lat, lon, population, tz,"
                    " std_offset_min FROM places WHERE id = ?1",
    [Q_USER_PUT] = "INSERT INTO users(id, language, preferences, home_lat, home_lon, home_place)"
                   " VALUES (?1,?2,?3,?4,?5,?6) ON CONFLICT(id) DO UPDATE SET language = ?2,"
                   " preferences = ?3, home_lat = ?4, home_lon = ?5, home_place = ?6",
    [Q_USER_GET] = "SELECT id, language, preferences, home_lat, home_lon, home_place FROM users WHERE id = ?1",
    [Q_VISIT_INS] = "INSERT INTO visits(user, place, time) VALUES (?1,?2,?3)",
    [Q_VISITS] = "SELECT v.time, p.id, p.kind, p.name, p.category, p.brand, p.city_id, p.country, p.lat, p.lon,"
                 " p.population, p.tz, p.std_offset_min FROM visits v JOIN places p ON p.id = v.place"
                 " WHERE v.user = ?1 ORDER BY v.time DESC, v.rowid DESC LIMIT ?2",
    [Q_CELL_PUT] = "INSERT INTO cells(id, lat, lon, radius_m) VALUES (?1,?2,?3,?4) ON CONFLICT(id) DO UPDATE SET"
                   " lat = ?2, lon = ?3, radius_m = ?4 RETURNING num",
    [Q_CELL_RTREE] = "INSERT OR REPLACE INTO cells_rtree(id, min_lat, max_lat, min_lon, max_lon) VALUES (?1,?2,?3,?4,?5)",
    [Q_CELL_HIT] = "SELECT c.id, c.lat, c.lon, c.radius_m FROM cells_rtree r JOIN cells c ON c.num = r.id"
                   " WHERE r.min_lat <= ?1 AND r.max_lat >= ?1 AND r.min_lon <= ?2 AND r.max_lon >= ?2",
    [Q_CELL_ALL] = "SELECT id, lat, lon, radius_m FROM cells",
};

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS places(id INTEGER PRIMARY KEY, kind TEXT NOT NULL CHECK(kind IN ('city','poi')),"
    " name TEXT NOT NULL, ascii_name TEXT, category TEXT, brand TEXT, city_id INTEGER NOT NULL,"
    " country TEXT NOT NULL, admin1 TEXT, lat REAL NOT NULL, lon REAL NOT NULL, population INTEGER NOT NULL,"
    " tz TEXT NOT NULL, std_offset_min INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS places_city ON places(city_id);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS places_rtree USING rtree(id, min_lat, max_lat, min_lon, max_lon);"
    "CREATE TABLE IF NOT EXISTS brands(category TEXT NOT NULL, name TEXT NOT NULL, wikidata TEXT,"
    " weight INTEGER NOT NULL, countries TEXT NOT NULL, PRIMARY KEY(category, name));"
    "CREATE TABLE IF NOT EXISTS cells(num INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, lat REAL NOT NULL,"
    " lon REAL NOT NULL, radius_m REAL NOT NULL);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS cells_rtree USING rtree(id, min_lat, max_lat, min_lon, max_lon);"
    "CREATE TABLE IF NOT EXISTS users(id TEXT PRIMARY KEY, language TEXT NOT NULL, preferences TEXT NOT NULL,"
    " home_lat REAL, home_lon REAL, home_place INTEGER,"
    " created INTEGER NOT NULL DEFAULT (strftime('%s','now')));"
    "CREATE TABLE IF NOT EXISTS visits(user TEXT NOT NULL REFERENCES users(id), place INTEGER NOT NULL,"
    " time INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS visits_user_time ON visits(user, time);"
    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '" SCHEMA_VERSION "');";

struct edge_store {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *q[Q_COUNT];
};

/* ---- small helpers ---------------------------------------------------------------------- */

static int db_error(edge_store *st, ng_error *err, const char *what) {
    return ng_error_set(err, "%s: %s: %s", st->path, what, sqlite3_errmsg(st->db));
}

static sqlite3_stmt *prep(edge_store *st, int which, ng_error *err) {
    if (!st->q[which]) {
        if (sqlite3_prepare_v3(st->db, SQL[which], -1, SQLITE_PREPARE_PERSISTENT, &st->q[which], NULL) != SQLITE_OK) {
            db_error(st, err, "preparing a query");
            return NULL;
        }
    }
    sqlite3_reset(st->q[which]);
    sqlite3_clear_bindings(st->q[which]);
    return st->q[which];
}

static int exec(edge_store *st, const char *sql, ng_error *err) {
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) == SQLITE_OK) return NG_OK;
    ng_error_set(err, "%s: %s", st->path, msg ? msg : sqlite3_errmsg(st->db));
    sqlite3_free(msg);
    return NG_ERR;
}

/* Copies src into dst[cap], cutting at a UTF-8 character boundary when it does not fit. */
static void copy_text(char *dst, size_t cap, const unsigned char *src) {
    size_t n = src ? strlen((const char *)src) : 0;
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && (src[n] & 0xC0) == 0x80) n--; /* do not split a multi-byte character */
    }
    if (n) memcpy(dst, src, n);
    dst[n] = 0;
}

static int check_latlon(const char *what, double lat, double lon, ng_error *err) {
    if (!(lat >= -90 && lat <= 90)) return ng_error_set(err, "%s: latitude %g is not in [-90, 90]", what, lat);
    if (!(lon >= -180 && lon <= 180)) return ng_error_set(err, "%s: longitude %g is not in [-180, 180]", what, lon);
    return NG_OK;
}

/* User and cell ids: short, printable, no spaces, so they are safe in logs and file names. */
static int check_id(const char *what, const char *id, ng_error *err) {
    if (!id || !*id) return ng_error_set(err, "%s: empty id", what);
    size_t n = strlen(id);
    if (n > STORE_ID_MAX) return ng_error_set(err, "%s: id is %zu bytes long (at most %d)", what, n, STORE_ID_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)id[i];
        if (!(isalnum(c) || c == '_' || c == '-' || c == '.' || c == ':'))
            return ng_error_set(err, "%s: id '%s' has character '%c' (allowed: letters, digits, _ - . :)", what, id,
                                isprint(c) ? c : '?');
    }
    return NG_OK;
}

static int category_index(const char *c) {
    for (int i = 0; store_categories[i]; i++)
        if (strcmp(c, store_categories[i]) == 0) return i;
    return -1;
}

static int check_category(const char *c, ng_error *err) {
    if (category_index(c) >= 0) return NG_OK;
    char list[256] = "";
    for (int i = 0; store_categories[i]; i++) {
        strcat(list, i ? ", " : "");
        strcat(list, store_categories[i]);
    }
    return ng_error_set(err, "unknown category '%s' (one of: %s)", c, list);
}

double store_distance_m(double lat1, double lon1, double lat2, double lon2) {
    double dlat = (lat2 - lat1) * DEG, dlon = (lon2 - lon1) * DEG;
    double a = sin(dlat / 2) * sin(dlat / 2) + cos(lat1 * DEG) * cos(lat2 * DEG) * sin(dlon / 2) * sin(dlon / 2);
    if (a > 1) a = 1; /* rounding near antipodes */
    return 2 * STORE_EARTH_RADIUS_M * asin(sqrt(a));
}

/* Up to two longitude ranges (split at the antimeridian) and one latitude range that contain
 * every point within radius_m of (lat, lon). */
typedef struct {
    double min_lat, max_lat;
    double lon[2][2];
    int n;
} bbox;

static bbox bbox_around(double lat, double lon, double radius_m) {
    bbox b;
    double ang = radius_m / STORE_EARTH_RADIUS_M, dlat = ang / DEG;
    const double pad = 1e-6; /* R*Tree keeps float32 bounds; they are rounded outward, pad anyway */
    b.min_lat = lat - dlat - pad;
    b.max_lat = lat + dlat + pad;
    double s = ang < M_PI / 2 ? sin(ang) / cos(lat * DEG) : 2;
    if (b.max_lat >= 90 || b.min_lat <= -90 || !(s < 1)) {
        /* A pole is inside the circle, or the circle is wider than the meridians allow:
         * every longitude qualifies. */
        b.min_lat = fmax(b.min_lat, -90);
        b.max_lat = fmin(b.max_lat, 90);
        b.lon[0][0] = -180, b.lon[0][1] = 180, b.n = 1;
        return b;
    }
    double dlon = asin(s) / DEG + pad, lo = lon - dlon, hi = lon + dlon;
    b.n = 1;
    b.lon[0][0] = lo, b.lon[0][1] = hi;
    if (lo < -180) { /* wraps west across the antimeridian */
        b.lon[0][0] = -180;
        b.lon[1][0] = lo + 360, b.lon[1][1] = 180, b.n = 2;
    } else if (hi > 180) {
        b.lon[0][1] = 180;
        b.lon[1][0] = -180, b.lon[1][1] = hi - 360, b.n = 2;
    }
    return b;
}

/* Columns 0..11 of Q_NEAR / Q_PLACE_GET (from column c0) into p. */
static void row_place(sqlite3_stmt *s, int c0, store_place *p) {
    memset(p, 0, sizeof *p);
    p->id = sqlite3_column_int64(s, c0);
    p->kind = strcmp((const char *)sqlite3_column_text(s, c0 + 1), "poi") == 0 ? STORE_POI : STORE_CITY;
    copy_text(p->name, sizeof p->name, sqlite3_column_text(s, c0 + 2));
    copy_text(p->category, sizeof p->category, sqlite3_column_text(s, c0 + 3));
    copy_text(p->brand, sizeof p->brand, sqlite3_column_text(s, c0 + 4));
    p->city_id = sqlite3_column_int64(s, c0 + 5);
    copy_text(p->country, sizeof p->country, sqlite3_column_text(s, c0 + 6));
    p->lat = sqlite3_column_double(s, c0 + 7);
    p->lon = sqlite3_column_double(s, c0 + 8);
    p->population = sqlite3_column_int64(s, c0 + 9);
    copy_text(p->tz, sizeof p->tz, sqlite3_column_text(s, c0 + 10));
    p->std_offset_min = sqlite3_column_int(s, c0 + 11);
}

/* ---- open / close ------------------------------------------------------------------------- */

edge_store *store_open(const char *path, int create, ng_error *err) {
    struct stat sb;
    if (!path || !*path) return ng_error_set(err, "edge store: empty path"), NULL;
    if (!create && stat(path, &sb) != 0)
        return ng_error_set(err, "%s: %s (create it with: netgpt edge-db init %s)", path, strerror(errno), path), NULL;
    edge_store *st = xcalloc(1, sizeof *st);
    st->path = xstrdup(path);
    int flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path, &st->db, flags, NULL) != SQLITE_OK) {
        db_error(st, err, "cannot open");
        goto err;
    }
    sqlite3_busy_timeout(st->db, 5000); /* another edge process may be importing */
    sqlite3_extended_result_codes(st->db, 1);
    /* The first statement reads the header: a file that is not SQLite fails here. */
    if (exec(st, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;", err)) goto err;
    if (exec(st, "CREATE VIRTUAL TABLE temp.rtree_probe USING rtree(id, a, b); DROP TABLE temp.rtree_probe;",
             NULL)) {
        ng_error_set(err, "%s: this SQLite (%s) was built without the R*Tree module (SQLITE_ENABLE_RTREE), which "
                     "the edge store needs for nearby queries", path, sqlite3_libversion());
        goto err;
    }
    if (create && exec(st, SCHEMA, err)) goto err;
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(st->db, "SELECT value FROM meta WHERE key = 'schema_version'", -1, &s, NULL) != SQLITE_OK) {
        ng_error_set(err, "%s: not a netgpt edge store (%s); create one with: netgpt edge-db init", path,
                     sqlite3_errmsg(st->db));
        goto err;
    }
    int rc = sqlite3_step(s);
    char version[16] = "";
    if (rc == SQLITE_ROW) copy_text(version, sizeof version, sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    if (rc != SQLITE_ROW || strcmp(version, SCHEMA_VERSION) != 0) {
        ng_error_set(err, "%s: edge store schema version '%s', this netgpt reads version %s", path, version,
                     SCHEMA_VERSION);
        goto err;
    }
    return st;
err:
    store_close(st);
    return NULL;
}

void store_close(edge_store *st) {
    if (!st) return;
    for (int i = 0; i < Q_COUNT; i++) sqlite3_finalize(st->q[i]);
    sqlite3_close(st->db);
    free(st->path);
    free(st);
}

/* ---- import ------------------------------------------------------------------------------ */

typedef struct {
    FILE *f;
    const char *path;
    char *line;
    size_t cap;
    long lineno;
    char *field[16];
    int n;
} tsv;

/* Reads the next line and splits it at tabs: 1 a line, 0 end of file, -1 error. */
static int tsv_next(tsv *t, int want, ng_error *err) {
    ssize_t len = getline(&t->line, &t->cap, t->f);
    if (len < 0) return 0;
    t->lineno++;
    while (len > 0 && (t->line[len - 1] == '\n' || t->line[len - 1] == '\r')) t->line[--len] = 0;
    if (memchr(t->line, 0, (size_t)len)) return ng_error_set(err, "%s:%ld: NUL byte in line", t->path, t->lineno);
    t->n = 0;
    for (char *p = t->line;;) {
        if (t->n == want) return ng_error_set(err, "%s:%ld: more than %d fields", t->path, t->lineno, want);
        t->field[t->n++] = p;
        char *tab = strchr(p, '\t');
        if (!tab) break;
        *tab = 0;
        p = tab + 1;
    }
    if (t->n != want) return ng_error_set(err, "%s:%ld: %d fields, expected %d", t->path, t->lineno, t->n, want);
    return 1;
}

static int tsv_open(tsv *t, const char *path, const char *header, ng_error *err) {
    memset(t, 0, sizeof *t);
    t->path = path;
    if (!(t->f = fopen(path, "rb"))) return ng_error_set(err, "%s: %s", path, strerror(errno));
    ssize_t len = getline(&t->line, &t->cap, t->f);
    t->lineno = 1;
    while (len > 0 && (t->line[len - 1] == '\n' || t->line[len - 1] == '\r')) t->line[--len] = 0;
    if (len < 0 || strcmp(t->line, header) != 0)
        return ng_error_set(err, "%s:1: header is not '%s' (make the file with tools/data/places/build_places.js)",
                            path, header);
    return NG_OK;
}

static void tsv_close(tsv *t) {
    if (t->f) fclose(t->f);
    free(t->line);
}

static int parse_i64(const char *s, int64_t min, int64_t max, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) return NG_ERR;
    *out = v;
    return NG_OK;
}

static int parse_f64(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return NG_ERR;
    *out = v;
    return NG_OK;
}

/* IANA zone names are path-like ("America/Argentina/Salta"); they become a file name under
 * the tz directory, so nothing else passes. */
static int valid_tz(const char *tz) {
    size_t n = strlen(tz);
    if (n >= 48 || tz[0] == '/' || strstr(tz, "..")) return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)tz[i]) || strchr("/_+-", tz[i]))) return 0;
    return 1;
}

static int valid_country(const char *c) { return isupper((unsigned char)c[0]) && isupper((unsigned char)c[1]) && !c[2]; }

/* "US,CA" | "*" | "*-CN,HK": a list of two-letter codes, maybe after "*-". */
static int valid_countries(const char *s) {
    if (strcmp(s, "*") == 0) return 1;
    if (s[0] == '*' && s[1] == '-') s += 2;
    for (;;) {
        if (!isupper((unsigned char)s[0]) || !isupper((unsigned char)s[1])) return 0;
        if (s[2] == 0) return 1;
        if (s[2] != ',') return 0;
        s += 3;
    }
}

static int countries_has(const char *list, const char *cc) {
    for (const char *p = list; p[0] && p[1]; p += 3) {
        if (p[0] == cc[0] && p[1] == cc[1]) return 1;
        if (!p[2]) break;
    }
    return 0;
}

static int brand_sold_in(const char *countries, const char *cc) {
    if (countries[0] == '*') return countries[1] == 0 || !countries_has(countries + 2, cc);
    return countries_has(countries, cc);
}

static int bind_text_or_null(sqlite3_stmt *s, int i, const char *v) {
    return v ? sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(s, i);
}

static int insert_place(edge_store *st, const store_place *p, const char *ascii, const char *admin1, ng_error *err) {
    sqlite3_stmt *s = prep(st, Q_PLACE_INS, err), *r;
    if (!s) return NG_ERR;
    sqlite3_bind_int64(s, 1, p->id);
    sqlite3_bind_text(s, 2, p->kind == STORE_POI ? "poi" : "city", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, p->name, -1, SQLITE_TRANSIENT);
    bind_text_or_null(s, 4, ascii);
    bind_text_or_null(s, 5, p->kind == STORE_POI ? p->category : NULL);
    bind_text_or_null(s, 6, p->kind == STORE_POI ? p->brand : NULL);
    sqlite3_bind_int64(s, 7, p->city_id);
    sqlite3_bind_text(s, 8, p->country, -1, SQLITE_TRANSIENT);
    bind_text_or_null(s, 9, admin1);
    sqlite3_bind_double(s, 10, p->lat);
    sqlite3_bind_double(s, 11, p->lon);
    sqlite3_bind_int64(s, 12, p->population);
    sqlite3_bind_text(s, 13, p->tz, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 14, p->std_offset_min);
    if (sqlite3_step(s) != SQLITE_DONE) return db_error(st, err, "inserting a place");
    if (!(r = prep(st, Q_RTREE_INS, err))) return NG_ERR;
    sqlite3_bind_int64(r, 1, p->id);
    sqlite3_bind_double(r, 2, p->lat);
    sqlite3_bind_double(r, 3, p->lon);
    if (sqlite3_step(r) != SQLITE_DONE) return db_error(st, err, "indexing a place");
    return NG_OK;
}

/* Cities kept in memory for POI placement. */
typedef struct {
    int64_t id, population;
    double lat, lon;
    char country[4], tz[48];
    int off;
} city_rec;

typedef struct {
    int cat;
    int64_t weight;
    char name[128], countries[1024];
} brand_rec;

static int import_cities(edge_store *st, const char *path, city_rec **out, size_t *n_out, int progress,
                         ng_error *err) {
    static const char HDR[] = "geonameid\tname\tasciiname\tcountry\tadmin1\tlat\tlon\tpopulation\ttimezone\tstd_offset_min";
    tsv t;
    size_t n = 0, cap = 0;
    city_rec *cities = NULL;
    int rc;
    if (tsv_open(&t, path, HDR, err)) goto err;
    while ((rc = tsv_next(&t, 10, err)) == 1) {
        char **f = t.field;
        store_place p = {.kind = STORE_CITY};
        int64_t off;
        if (parse_i64(f[0], 1, 0x7fffffff, &p.id)) {
            ng_error_set(err, "%s:%ld: geonameid '%s' is not an integer in [1, 2^31)", path, t.lineno, f[0]);
            goto err;
        }
        if (!*f[1] || strlen(f[1]) >= sizeof p.name) {
            ng_error_set(err, "%s:%ld: name is empty or longer than %zu bytes", path, t.lineno, sizeof p.name - 1);
            goto err;
        }
        if (!valid_country(f[3])) {
            ng_error_set(err, "%s:%ld: country '%s' is not a two-letter code", path, t.lineno, f[3]);
            goto err;
        }
        if (parse_f64(f[5], &p.lat) || parse_f64(f[6], &p.lon) || check_latlon("", p.lat, p.lon, NULL)) {
            ng_error_set(err, "%s:%ld: coordinates '%s', '%s' are not a latitude in [-90, 90] and a longitude in "
                         "[-180, 180]", path, t.lineno, f[5], f[6]);
            goto err;
        }
        if (parse_i64(f[7], 0, INT64_C(100000000000), &p.population)) {
            ng_error_set(err, "%s:%ld: population '%s' is not a non-negative integer", path, t.lineno, f[7]);
            goto err;
        }
        if (!valid_tz(f[8])) {
            ng_error_set(err, "%s:%ld: timezone '%s' is not an IANA zone name", path, t.lineno, f[8]);
            goto err;
        }
        if (parse_i64(f[9], -18 * 60, 18 * 60, &off)) {
            ng_error_set(err, "%s:%ld: std_offset_min '%s' is not minutes in [-1080, 1080]", path, t.lineno, f[9]);
            goto err;
        }
        strcpy(p.name, f[1]);
        strcpy(p.country, f[3]);
        strcpy(p.tz, f[8]);
        p.std_offset_min = (int)off;
        p.city_id = p.id;
        if (insert_place(st, &p, f[2], f[4], err)) {
            if (sqlite3_extended_errcode(st->db) == SQLITE_CONSTRAINT_PRIMARYKEY)
                ng_error_set(err, "%s:%ld: geonameid %" PRId64 " appears twice", path, t.lineno, p.id);
            goto err;
        }
        if (p.population >= POI_MIN_POPULATION) {
            if (n == cap) cities = xrealloc(cities, (cap = cap ? cap * 2 : 1024) * sizeof *cities);
            city_rec *c = &cities[n++];
            c->id = p.id, c->population = p.population, c->lat = p.lat, c->lon = p.lon, c->off = p.std_offset_min;
            strcpy(c->country, p.country);
            strcpy(c->tz, p.tz);
        }
        if (progress && (t.lineno - 1) % PROGRESS_EVERY == 0)
            fprintf(stderr, "import-places: %ld cities\n", t.lineno - 1);
    }
    if (rc < 0) goto err;
    if (t.lineno < 2) {
        ng_error_set(err, "%s: no cities after the header", path);
        goto err;
    }
    if (progress) fprintf(stderr, "import-places: %ld cities from %s\n", t.lineno - 1, path);
    tsv_close(&t);
    *out = cities;
    *n_out = n;
    return NG_OK;
err:
    tsv_close(&t);
    free(cities);
    return NG_ERR;
}

static int import_brands(edge_store *st, const char *path, brand_rec **out, size_t *n_out, ng_error *err) {
    tsv t;
    size_t n = 0, cap = 0;
    brand_rec *brands = NULL;
    int rc;
    if (tsv_open(&t, path, "category\tbrand\twikidata\tweight\tcountries", err)) goto err;
    while ((rc = tsv_next(&t, 5, err)) == 1) {
        char **f = t.field;
        int64_t weight;
        int cat = category_index(f[0]);
        if (cat < 0) {
            ng_error e;
            check_category(f[0], &e);
            ng_error_set(err, "%s:%ld: %s", path, t.lineno, e.msg);
            goto err;
        }
        if (!*f[1] || strlen(f[1]) >= sizeof brands->name) {
            ng_error_set(err, "%s:%ld: brand is empty or longer than %zu bytes", path, t.lineno, sizeof brands->name - 1);
            goto err;
        }
        if (parse_i64(f[3], 1, INT64_C(1000000000), &weight)) {
            ng_error_set(err, "%s:%ld: weight '%s' is not a positive integer", path, t.lineno, f[3]);
            goto err;
        }
        if (strlen(f[4]) >= sizeof brands->countries || !valid_countries(f[4])) {
            ng_error_set(err, "%s:%ld: countries '%.40s' is not '*', '*-XX,YY' or 'XX,YY'", path, t.lineno, f[4]);
            goto err;
        }
        sqlite3_stmt *s = prep(st, Q_BRAND_INS, err);
        if (!s) goto err;
        sqlite3_bind_text(s, 1, f[0], -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, f[1], -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 3, f[2], -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 4, weight);
        sqlite3_bind_text(s, 5, f[4], -1, SQLITE_TRANSIENT);
        if (sqlite3_step(s) != SQLITE_DONE) {
            if (sqlite3_extended_errcode(st->db) == SQLITE_CONSTRAINT_PRIMARYKEY)
                ng_error_set(err, "%s:%ld: brand '%s' appears twice in category %s", path, t.lineno, f[1], f[0]);
            else
                db_error(st, err, "inserting a brand");
            goto err;
        }
        if (n == cap) brands = xrealloc(brands, (cap = cap ? cap * 2 : 128) * sizeof *brands);
        brand_rec *b = &brands[n++];
        b->cat = cat, b->weight = weight;
        strcpy(b->name, f[1]);
        strcpy(b->countries, f[4]);
    }
    if (rc < 0) goto err;
    if (n == 0) {
        ng_error_set(err, "%s: no brands after the header", path);
        goto err;
    }
    tsv_close(&t);
    *out = brands;
    *n_out = n;
    return NG_OK;
err:
    tsv_close(&t);
    free(brands);
    return NG_ERR;
}

/* splitmix64: a fixed, well-mixed hash, so placement is the same on every machine. */
static uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

static double unit(uint64_t h) { return (double)(h >> 11) * 0x1.0p-53; }

static int cmp_city_country(const void *a, const void *b) {
    const city_rec *x = a, *y = b;
    int c = strcmp(x->country, y->country);
    return c ? c : (x->id > y->id) - (x->id < y->id);
}

/* The point at distance d metres and bearing theta (radians) from (lat, lon). */
static void destination(double lat, double lon, double d, double theta, double *lat2, double *lon2) {
    double p1 = lat * DEG, l1 = lon * DEG, a = d / STORE_EARTH_RADIUS_M;
    double p2 = asin(sin(p1) * cos(a) + cos(p1) * sin(a) * cos(theta));
    double l2 = l1 + atan2(sin(theta) * sin(a) * cos(p1), cos(a) - sin(p1) * sin(p2));
    *lat2 = p2 / DEG;
    *lon2 = remainder(l2 / DEG, 360.0); /* back into [-180, 180] across the antimeridian */
}

static int place_pois(edge_store *st, city_rec *cities, size_t n_cities, const brand_rec *brands, size_t n_brands,
                      uint64_t seed, int progress, int64_t *n_pois, ng_error *err) {
    enum { N_CAT = sizeof store_categories / sizeof store_categories[0] - 1 };
    /* Per category: indexes of the brands sold in the current country, and their weights. */
    int *elig[N_CAT];
    int n_elig[N_CAT];
    int64_t total[N_CAT];
    for (int c = 0; c < N_CAT; c++) elig[c] = xmalloc(n_brands * sizeof(int));
    /* Group by country so each country's brand lists are built once. */
    qsort(cities, n_cities, sizeof *cities, cmp_city_country);
    const char *cur = "";
    int64_t count = 0;
    int rc = NG_ERR;
    for (size_t i = 0; i < n_cities; i++) {
        const city_rec *c = &cities[i];
        if (strcmp(c->country, cur) != 0) {
            cur = c->country;
            for (int k = 0; k < N_CAT; k++) n_elig[k] = 0, total[k] = 0;
            for (size_t b = 0; b < n_brands; b++) {
                if (!brand_sold_in(brands[b].countries, cur)) continue;
                elig[brands[b].cat][n_elig[brands[b].cat]++] = (int)b;
                total[brands[b].cat] += brands[b].weight;
            }
        }
        int per_cat = 1 + (int)floor(1.5 * log10((double)c->population / POI_MIN_POPULATION));
        if (per_cat > 63) per_cat = 63;
        for (int k = 0; k < N_CAT; k++) {
            for (int j = 0; j < per_cat && n_elig[k]; j++) {
                uint64_t h = mix64(seed ^ mix64((uint64_t)c->id ^ mix64((uint64_t)(k * 64 + j))));
                /* Brand: weighted by its OSM count. */
                int64_t pick = (int64_t)(unit(h) * (double)total[k]);
                int b = elig[k][n_elig[k] - 1];
                for (int e = 0; e < n_elig[k]; e++) {
                    if (pick < brands[elig[k][e]].weight) {
                        b = elig[k][e];
                        break;
                    }
                    pick -= brands[elig[k][e]].weight;
                }
                /* Uniform in the disc: radius ~ sqrt(u). */
                double d = STORE_POI_RADIUS_M * sqrt(unit(mix64(h + 1)));
                double theta = 2 * M_PI * unit(mix64(h + 2));
                store_place p = {.kind = STORE_POI, .city_id = c->id, .std_offset_min = c->off};
                p.id = c->id * 1024 + k * 64 + j;
                destination(c->lat, c->lon, d, theta, &p.lat, &p.lon);
                copy_text(p.name, sizeof p.name, (const unsigned char *)brands[b].name);
                strcpy(p.category, store_categories[k]);
                strcpy(p.brand, brands[b].name);
                strcpy(p.country, c->country);
                strcpy(p.tz, c->tz);
                if (insert_place(st, &p, NULL, NULL, err)) goto done;
                if (progress && ++count % PROGRESS_EVERY == 0) fprintf(stderr, "import-places: %" PRId64 " POIs\n", count);
                else if (!progress) count++;
            }
        }
    }
    *n_pois = count;
    rc = NG_OK;
done:
    for (int c = 0; c < N_CAT; c++) free(elig[c]);
    return rc;
}

int store_import_places(edge_store *st, const char *cities_path, const char *brands_path, uint64_t seed,
                        int progress, ng_error *err) {
    city_rec *cities = NULL;
    brand_rec *brands = NULL;
    size_t n_cities = 0, n_brands = 0;
    int64_t n_pois = 0;
    char seed_s[32];
    if (exec(st, "BEGIN IMMEDIATE", err)) return NG_ERR;
    /* Replace everything: the result must depend only on the files and the seed. */
    if (exec(st, "DELETE FROM places; DELETE FROM places_rtree; DELETE FROM brands;", err)) goto err;
    if (import_cities(st, cities_path, &cities, &n_cities, progress, err)) goto err;
    if (import_brands(st, brands_path, &brands, &n_brands, err)) goto err;
    if (place_pois(st, cities, n_cities, brands, n_brands, seed, progress, &n_pois, err)) goto err;
    snprintf(seed_s, sizeof seed_s, "%" PRIu64, seed);
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, "INSERT OR REPLACE INTO meta(key, value) VALUES ('places_seed', ?1),"
                           " ('attribution', ?2)", -1, &s, NULL) != SQLITE_OK) {
        db_error(st, err, "recording the seed");
        goto err;
    }
    sqlite3_bind_text(s, 1, seed_s, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, STORE_ATTRIBUTION, -1, SQLITE_STATIC);
    int step = sqlite3_step(s);
    sqlite3_finalize(s);
    if (step != SQLITE_DONE) {
        db_error(st, err, "recording the seed");
        goto err;
    }
    if (exec(st, "COMMIT", err)) goto err;
    if (progress) fprintf(stderr, "import-places: %zu brands, %" PRId64 " POIs placed\n", n_brands, n_pois);
    free(cities);
    free(brands);
    return NG_OK;
err:
    exec(st, "ROLLBACK", NULL);
    free(cities);
    free(brands);
    return NG_ERR;
}

/* ---- queries ------------------------------------------------------------------------------ */

/* Inserts p into the sorted top list out[0..*n) of capacity cap (nearest first, then id). */
static void top_insert(store_place *out, int *n, int cap, const store_place *p) {
    int i = *n;
    if (i == cap) {
        const store_place *last = &out[cap - 1];
        if (p->distance_m > last->distance_m || (p->distance_m == last->distance_m && p->id > last->id)) return;
        i = cap - 1;
    } else {
        (*n)++;
    }
    while (i > 0 && (out[i - 1].distance_m > p->distance_m ||
                     (out[i - 1].distance_m == p->distance_m && out[i - 1].id > p->id))) {
        out[i] = out[i - 1];
        i--;
    }
    out[i] = *p;
}

static int nearest_within(edge_store *st, const store_query *q, double radius, store_place *out, int *n,
                          ng_error *err) {
    bbox b = bbox_around(q->lat, q->lon, radius);
    *n = 0;
    for (int k = 0; k < b.n; k++) {
        sqlite3_stmt *s = prep(st, Q_NEAR, err);
        if (!s) return NG_ERR;
        sqlite3_bind_double(s, 1, b.min_lat);
        sqlite3_bind_double(s, 2, b.max_lat);
        sqlite3_bind_double(s, 3, b.lon[k][0]);
        sqlite3_bind_double(s, 4, b.lon[k][1]);
        bind_text_or_null(s, 5, q->category && *q->category ? q->category : NULL);
        bind_text_or_null(s, 6, q->kind == STORE_CITY ? "city" : q->kind == STORE_POI ? "poi" : NULL);
        int rc;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            double lat = sqlite3_column_double(s, 7), lon = sqlite3_column_double(s, 8);
            double d = store_distance_m(q->lat, q->lon, lat, lon);
            if (d > radius) continue;
            store_place p;
            row_place(s, 0, &p);
            p.distance_m = d;
            top_insert(out, n, q->limit, &p);
        }
        if (rc != SQLITE_DONE) return db_error(st, err, "nearby query");
    }
    sqlite3_reset(st->q[Q_NEAR]);
    return NG_OK;
}

int store_nearest(edge_store *st, const store_query *q, store_place *out, int *n, ng_error *err) {
    *n = 0;
    if (check_latlon("nearest", q->lat, q->lon, err)) return NG_ERR;
    if (!(q->radius_m >= 0 && q->radius_m <= STORE_MAX_RADIUS_M))
        return ng_error_set(err, "nearest: radius %g m is not in (0, %.0f] (0 = unlimited)", q->radius_m,
                            STORE_MAX_RADIUS_M);
    if (q->limit < 1 || q->limit > STORE_MAX_LIMIT)
        return ng_error_set(err, "nearest: limit %d is not in [1, %d]", q->limit, STORE_MAX_LIMIT);
    if (q->kind != STORE_ANY && q->kind != STORE_CITY && q->kind != STORE_POI)
        return ng_error_set(err, "nearest: kind %d is not any/city/poi", (int)q->kind);
    if (q->category && *q->category && check_category(q->category, err)) return NG_ERR;
    if (q->radius_m > 0) return nearest_within(st, q, q->radius_m, out, n, err);
    /* Unlimited: widen until enough are found. Everything nearer than the limit-th result lies
     * inside the last radius searched, so the answer is exact. */
    for (double r = 5000;; r = fmin(r * 4, STORE_MAX_RADIUS_M)) {
        if (nearest_within(st, q, r, out, n, err)) return NG_ERR;
        if (*n >= q->limit || r >= STORE_MAX_RADIUS_M) return NG_OK;
    }
}

int store_get_place(edge_store *st, int64_t id, store_place *out, ng_error *err) {
    sqlite3_stmt *s = prep(st, Q_PLACE_GET, err);
    if (!s) return NG_ERR;
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) row_place(s, 0, out);
    sqlite3_reset(s);
    if (rc == SQLITE_ROW) return NG_OK;
    if (rc == SQLITE_DONE) return ng_error_set(err, "%s: no place with id %" PRId64, st->path, id);
    return db_error(st, err, "place query");
}

/* ---- users, visits, cells ----------------------------------------------------------------- */

int store_add_user(edge_store *st, const store_user *u, ng_error *err) {
    if (check_id("user", u->id, err)) return NG_ERR;
    size_t ln = strlen(u->language);
    if (ln == 0 || ln >= sizeof u->language) return ng_error_set(err, "user %s: language '%s' is empty or too long", u->id, u->language);
    for (size_t i = 0; i < ln; i++)
        if (!(isalnum((unsigned char)u->language[i]) || u->language[i] == '-' || u->language[i] == '_'))
            return ng_error_set(err, "user %s: language '%s' is not a language tag like 'en' or 'pt-BR'", u->id,
                                u->language);
    if (strnlen(u->preferences, sizeof u->preferences) >= sizeof u->preferences)
        return ng_error_set(err, "user %s: preferences longer than %zu bytes", u->id, sizeof u->preferences - 1);
    int64_t home = 0;
    if (u->has_home) {
        if (check_latlon("user home", u->home_lat, u->home_lon, err)) return NG_ERR;
        store_query q = {.lat = u->home_lat, .lon = u->home_lon, .kind = STORE_CITY, .limit = 1};
        store_place p;
        int n;
        if (store_nearest(st, &q, &p, &n, err)) return NG_ERR;
        if (n) home = p.id;
    }
    sqlite3_stmt *s = prep(st, Q_USER_PUT, err);
    if (!s) return NG_ERR;
    sqlite3_bind_text(s, 1, u->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, u->language, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, u->preferences, -1, SQLITE_TRANSIENT);
    if (u->has_home) {
        sqlite3_bind_double(s, 4, u->home_lat);
        sqlite3_bind_double(s, 5, u->home_lon);
    }
    if (home) sqlite3_bind_int64(s, 6, home);
    if (sqlite3_step(s) != SQLITE_DONE) return db_error(st, err, "adding a user");
    return NG_OK;
}

int store_get_user(edge_store *st, const char *id, store_user *out, ng_error *err) {
    if (check_id("user", id, err)) return NG_ERR;
    sqlite3_stmt *s = prep(st, Q_USER_GET, err);
    if (!s) return NG_ERR;
    sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof *out);
        copy_text(out->id, sizeof out->id, sqlite3_column_text(s, 0));
        copy_text(out->language, sizeof out->language, sqlite3_column_text(s, 1));
        copy_text(out->preferences, sizeof out->preferences, sqlite3_column_text(s, 2));
        out->has_home = sqlite3_column_type(s, 3) != SQLITE_NULL;
        out->home_lat = sqlite3_column_double(s, 3);
        out->home_lon = sqlite3_column_double(s, 4);
        out->home_place = sqlite3_column_int64(s, 5);
    }
    sqlite3_reset(s);
    if (rc == SQLITE_ROW) return NG_OK;
    if (rc == SQLITE_DONE) return ng_error_set(err, "%s: no user '%s'", st->path, id);
    return db_error(st, err, "user query");
}

int store_add_visit(edge_store *st, const char *user, int64_t place, int64_t time, ng_error *err) {
    store_user u;
    store_place p;
    if (time < 0 || time > MAX_TIME) return ng_error_set(err, "visit: time %" PRId64 " is not in [1970, 9999]", time);
    if (store_get_user(st, user, &u, err) || store_get_place(st, place, &p, err)) return NG_ERR;
    sqlite3_stmt *s = prep(st, Q_VISIT_INS, err);
    if (!s) return NG_ERR;
    sqlite3_bind_text(s, 1, user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, place);
    sqlite3_bind_int64(s, 3, time);
    if (sqlite3_step(s) != SQLITE_DONE) return db_error(st, err, "adding a visit");
    return NG_OK;
}

int store_recent_visits(edge_store *st, const char *user, store_visit *out, int limit, int *n, ng_error *err) {
    *n = 0;
    if (check_id("user", user, err)) return NG_ERR;
    if (limit < 1 || limit > STORE_MAX_LIMIT)
        return ng_error_set(err, "recent visits: limit %d is not in [1, %d]", limit, STORE_MAX_LIMIT);
    sqlite3_stmt *s = prep(st, Q_VISITS, err);
    if (!s) return NG_ERR;
    sqlite3_bind_text(s, 1, user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 2, limit);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        out[*n].time = sqlite3_column_int64(s, 0);
        row_place(s, 1, &out[*n].place);
        (*n)++;
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? NG_OK : db_error(st, err, "visits query");
}

int store_add_cell(edge_store *st, const char *id, double lat, double lon, double radius_m, ng_error *err) {
    if (check_id("cell", id, err) || check_latlon("cell", lat, lon, err)) return NG_ERR;
    if (!(radius_m > 0 && radius_m <= 100000))
        return ng_error_set(err, "cell %s: radius %g m is not in (0, 100000]", id, radius_m);
    sqlite3_stmt *s = prep(st, Q_CELL_PUT, err), *r;
    if (!s) return NG_ERR;
    sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(s, 2, lat);
    sqlite3_bind_double(s, 3, lon);
    sqlite3_bind_double(s, 4, radius_m);
    if (sqlite3_step(s) != SQLITE_ROW) return db_error(st, err, "adding a cell");
    int64_t num = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    /* One R*Tree box per cell: a cell across the antimeridian gets all longitudes, a
     * conservative box that the exact distance check then narrows. */
    bbox b = bbox_around(lat, lon, radius_m);
    if (!(r = prep(st, Q_CELL_RTREE, err))) return NG_ERR;
    sqlite3_bind_int64(r, 1, num);
    sqlite3_bind_double(r, 2, b.min_lat);
    sqlite3_bind_double(r, 3, b.max_lat);
    sqlite3_bind_double(r, 4, b.n == 1 ? b.lon[0][0] : -180);
    sqlite3_bind_double(r, 5, b.n == 1 ? b.lon[0][1] : 180);
    if (sqlite3_step(r) != SQLITE_DONE) return db_error(st, err, "indexing a cell");
    return NG_OK;
}

static int cell_scan(edge_store *st, sqlite3_stmt *s, double lat, double lon, int need_inside, store_cell *best,
                     int *found, ng_error *err) {
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        store_cell c;
        copy_text(c.id, sizeof c.id, sqlite3_column_text(s, 0));
        c.lat = sqlite3_column_double(s, 1);
        c.lon = sqlite3_column_double(s, 2);
        c.radius_m = sqlite3_column_double(s, 3);
        c.distance_m = store_distance_m(lat, lon, c.lat, c.lon);
        c.inside = c.distance_m <= c.radius_m;
        if (need_inside && !c.inside) continue;
        if (!*found || c.distance_m < best->distance_m ||
            (c.distance_m == best->distance_m && strcmp(c.id, best->id) < 0)) {
            *best = c;
            *found = 1;
        }
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? NG_OK : db_error(st, err, "cell query");
}

int store_cell_at(edge_store *st, double lat, double lon, store_cell *out, int *found, ng_error *err) {
    *found = 0;
    if (check_latlon("cell lookup", lat, lon, err)) return NG_ERR;
    sqlite3_stmt *s = prep(st, Q_CELL_HIT, err);
    if (!s) return NG_ERR;
    sqlite3_bind_double(s, 1, lat);
    sqlite3_bind_double(s, 2, lon);
    if (cell_scan(st, s, lat, lon, 1, out, found, err)) return NG_ERR;
    if (*found) return NG_OK;
    /* Outside every cell: the nearest one serves. An edge node has few cells; scan them. */
    if (!(s = prep(st, Q_CELL_ALL, err))) return NG_ERR;
    return cell_scan(st, s, lat, lon, 0, out, found, err);
}

int store_stats_get(edge_store *st, store_stats *out, ng_error *err) {
    static const char SQL_STATS[] =
        "SELECT (SELECT COUNT(*) FROM places WHERE kind = 'city'), (SELECT COUNT(*) FROM places WHERE kind = 'poi'),"
        " (SELECT COUNT(*) FROM brands), (SELECT COUNT(*) FROM cells), (SELECT COUNT(*) FROM users),"
        " (SELECT COUNT(*) FROM visits), (SELECT value FROM meta WHERE key = 'places_seed')";
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(st->db, SQL_STATS, -1, &s, NULL) != SQLITE_OK) return db_error(st, err, "stats");
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        out->cities = sqlite3_column_int64(s, 0);
        out->pois = sqlite3_column_int64(s, 1);
        out->brands = sqlite3_column_int64(s, 2);
        out->cells = sqlite3_column_int64(s, 3);
        out->users = sqlite3_column_int64(s, 4);
        out->visits = sqlite3_column_int64(s, 5);
        out->seed = sqlite3_column_type(s, 6) == SQLITE_NULL ? -1 : sqlite3_column_int64(s, 6);
    }
    sqlite3_finalize(s);
    return rc == SQLITE_ROW ? NG_OK : db_error(st, err, "stats");
}

/* ---- time --------------------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int64_t y, int m) {
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : dm[m - 1];
}

static int digits(const char **p, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i])) return NG_ERR;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return NG_OK;
}

int store_parse_time(const char *s, int64_t *out, ng_error *err) {
    const char *p = s;
    int y, mo, d, h, mi, sec = 0, oh = 0, om = 0, sign = 0;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d) ||
        (*p != 'T' && *p != ' ') || (p++, digits(&p, 2, &h)) || *p++ != ':' || digits(&p, 2, &mi))
        goto bad;
    if (*p == ':' && (p++, digits(&p, 2, &sec))) goto bad;
    if (*p == 'Z') p++;
    else if (*p == '+' || *p == '-') {
        sign = *p++ == '-' ? -1 : 1;
        if (digits(&p, 2, &oh)) goto bad;
        if (*p == ':') p++;
        if (digits(&p, 2, &om)) goto bad;
    }
    if (*p) goto bad;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60 ||
        oh > 18 || om > 59)
        return ng_error_set(err, "time '%s': a field is out of range", s);
    *out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - sign * (oh * 3600 + om * 60);
    if (*out < 0) return ng_error_set(err, "time '%s' is before 1970", s);
    return NG_OK;
bad:
    return ng_error_set(err, "time '%s' is not YYYY-MM-DDTHH:MM[:SS][Z|+HH:MM]", s);
}

/* A POSIX TZ rule, the footer of a TZif file ("CET-1CEST,M3.5.0,M10.5.0/3"). */
typedef struct {
    char std_name[16], dst_name[16];
    int std_off, dst_off; /* seconds east of UTC */
    int has_dst;
    struct {
        char type; /* 'M', 'J' or 'D' (zero-based day of year) */
        int m, w, d, n;
        int time; /* seconds after local midnight */
    } rule[2];
} posix_tz;

static int tz_name(const char **p, char *out, size_t cap) {
    const char *s = *p;
    size_t n = 0;
    if (*s == '<') {
        s++;
        while (s[n] && s[n] != '>') n++;
        if (s[n] != '>') return NG_ERR;
        *p = s + n + 1;
    } else {
        while (isalpha((unsigned char)s[n])) n++;
        *p = s + n;
    }
    if (n < 3 || n >= cap) return NG_ERR;
    memcpy(out, s, n);
    out[n] = 0;
    return NG_OK;
}

/* [+-]hh[:mm[:ss]] into seconds. */
static int tz_hms(const char **p, int *out) {
    int sign = 1, v[3] = {0, 0, 0};
    if (**p == '+' || **p == '-') sign = *(*p)++ == '-' ? -1 : 1;
    for (int i = 0; i < 3; i++) {
        if (i && **p != ':') break;
        if (i) (*p)++;
        if (!isdigit((unsigned char)**p)) return NG_ERR;
        char *end;
        long x = strtol(*p, &end, 10);
        if (x > 167) return NG_ERR;
        v[i] = (int)x;
        *p = end;
    }
    *out = sign * (v[0] * 3600 + v[1] * 60 + v[2]);
    return NG_OK;
}

static int tz_rule(const char **p, posix_tz *tz, int i) {
    char *end;
    if (**p == 'M') {
        tz->rule[i].type = 'M';
        tz->rule[i].m = (int)strtol(*p + 1, &end, 10);
        if (*end != '.') return NG_ERR;
        tz->rule[i].w = (int)strtol(end + 1, &end, 10);
        if (*end != '.') return NG_ERR;
        tz->rule[i].d = (int)strtol(end + 1, &end, 10);
        if (tz->rule[i].m < 1 || tz->rule[i].m > 12 || tz->rule[i].w < 1 || tz->rule[i].w > 5 || tz->rule[i].d < 0 ||
            tz->rule[i].d > 6)
            return NG_ERR;
    } else {
        tz->rule[i].type = **p == 'J' ? 'J' : 'D';
        tz->rule[i].n = (int)strtol(*p + (**p == 'J'), &end, 10);
        if (end == *p + (**p == 'J') || tz->rule[i].n < 0 || tz->rule[i].n > 365) return NG_ERR;
    }
    *p = end;
    tz->rule[i].time = 7200; /* 02:00 by default */
    if (**p == '/') {
        (*p)++;
        if (tz_hms(p, &tz->rule[i].time)) return NG_ERR;
    }
    return NG_OK;
}

static int posix_tz_parse(const char *s, posix_tz *tz) {
    memset(tz, 0, sizeof *tz);
    int off;
    if (tz_name(&s, tz->std_name, sizeof tz->std_name) || tz_hms(&s, &off)) return NG_ERR;
    tz->std_off = -off; /* POSIX counts west of Greenwich as positive */
    if (!*s) return NG_OK;
    if (tz_name(&s, tz->dst_name, sizeof tz->dst_name)) return NG_ERR;
    tz->has_dst = 1;
    tz->dst_off = tz->std_off + 3600;
    if (*s && *s != ',') {
        if (tz_hms(&s, &off)) return NG_ERR;
        tz->dst_off = -off;
    }
    if (*s != ',') return NG_ERR; /* no rule: the zone is not usable without tzdata's rules */
    s++;
    if (tz_rule(&s, tz, 0) || *s++ != ',' || tz_rule(&s, tz, 1) || *s) return NG_ERR;
    return NG_OK;
}

/* Unix seconds of rule i in year y, given the UTC offset in force before it. */
static int64_t rule_time(const posix_tz *tz, int i, int64_t y, int off_before) {
    int64_t day;
    if (tz->rule[i].type == 'M') {
        int m = tz->rule[i].m;
        int64_t first = days_from_civil(y, m, 1);
        int wd = (int)(((first + 4) % 7 + 7) % 7); /* 1970-01-01 was a Thursday */
        int dom = 1 + (tz->rule[i].d - wd + 7) % 7 + (tz->rule[i].w - 1) * 7;
        while (dom > days_in_month(y, m)) dom -= 7;
        day = first + dom - 1;
    } else if (tz->rule[i].type == 'J') {
        int n = tz->rule[i].n; /* 1..365, February 29 never counted */
        day = days_from_civil(y, 1, 1) + n - 1 + (is_leap(y) && n >= 60);
    } else {
        day = days_from_civil(y, 1, 1) + tz->rule[i].n;
    }
    return day * 86400 + tz->rule[i].time - off_before;
}

static void posix_tz_at(const posix_tz *tz, int64_t t, int *off, int *dst, const char **abbr) {
    *off = tz->std_off, *dst = 0, *abbr = tz->std_name;
    if (!tz->has_dst) return;
    int64_t y;
    int m, d;
    civil_from_days((t + tz->std_off) / 86400 - ((t + tz->std_off) % 86400 < 0), &y, &m, &d);
    int64_t start = rule_time(tz, 0, y, tz->std_off), end = rule_time(tz, 1, y, tz->dst_off);
    /* Northern zones: DST between start and end; southern: outside end..start. */
    int in = start < end ? (t >= start && t < end) : !(t >= end && t < start);
    if (in) *off = tz->dst_off, *dst = 1, *abbr = tz->dst_name;
}

static uint32_t be32(const unsigned char *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static int64_t be64(const unsigned char *p) { return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4)); }

/* UTC offset of zone tz at t from its TZif file (RFC 8536): the transition table, then the
 * footer's POSIX rule past the last transition. NG_ERR when the file is missing or bad. */
static int tzif_lookup(const char *tz, int64_t t, int *off, int *dst, char *abbr, size_t abbr_cap) {
    const char *dir = getenv("TZDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", tz);
    size_t len;
    unsigned char *buf = (unsigned char *)ng_read_file(path, &len, NULL);
    int rc = NG_ERR;
    if (!buf || len < 44 || memcmp(buf, "TZif", 4) != 0) goto done;
    const unsigned char *h = buf, *end = buf + len;
    int tsize = 4;
    uint32_t c[6];
    for (int pass = 0;; pass++) {
        for (int i = 0; i < 6; i++) c[i] = be32(h + 20 + 4 * i); /* isut, isstd, leap, time, type, char */
        size_t body = (size_t)c[3] * tsize + c[3] + (size_t)c[4] * 6 + c[5] + (size_t)c[2] * (tsize + 4) + c[1] + c[0];
        if (c[4] == 0 || c[4] > 256 || c[3] > 100000 || c[5] > 10000 || (size_t)(end - h) < 44 + body) goto done;
        if (pass == 1 || h[4] < '2') break;
        h += 44 + body; /* version 2+: skip the 32-bit block for the 64-bit one */
        if ((size_t)(end - h) < 44 || memcmp(h, "TZif", 4) != 0) goto done;
        tsize = 8;
    }
    const unsigned char *times = h + 44, *idx = times + (size_t)c[3] * tsize, *types = idx + c[3];
    const unsigned char *chars = types + (size_t)c[4] * 6;
    const unsigned char *footer = chars + c[5] + (size_t)c[2] * (tsize + 4) + c[1] + c[0];
    int64_t last = 0;
    int type = 0;
    long lo = 0, hi = (long)c[3]; /* first transition after t */
    while (lo < hi) {
        long mid = (lo + hi) / 2;
        int64_t tm = tsize == 8 ? be64(times + mid * 8) : (int32_t)be32(times + mid * 4);
        if (tm <= t) lo = mid + 1;
        else hi = mid;
    }
    if (c[3]) last = tsize == 8 ? be64(times + (c[3] - 1) * 8) : (int32_t)be32(times + (c[3] - 1) * 4);
    if (lo > 0) type = idx[lo - 1];
    if (type >= (int)c[4]) goto done;
    /* Past the last transition the footer rule, when there is one, is authoritative. */
    if (tsize == 8 && (c[3] == 0 || t >= last) && footer < end && *footer == '\n') {
        const unsigned char *fe = memchr(footer + 1, '\n', (size_t)(end - footer - 1));
        char rule[128];
        posix_tz ptz;
        if (fe && fe - footer - 1 > 0 && (size_t)(fe - footer - 1) < sizeof rule) {
            memcpy(rule, footer + 1, (size_t)(fe - footer - 1));
            rule[fe - footer - 1] = 0;
            if (posix_tz_parse(rule, &ptz) == NG_OK) {
                const char *a;
                posix_tz_at(&ptz, t, off, dst, &a);
                copy_text(abbr, abbr_cap, (const unsigned char *)a);
                rc = NG_OK;
                goto done;
            }
        }
    }
    const unsigned char *ti = types + type * 6;
    *off = (int32_t)be32(ti);
    *dst = ti[4] != 0;
    if (ti[5] < c[5]) {
        char a[16];
        size_t n = strnlen((const char *)chars + ti[5], c[5] - ti[5]);
        if (n >= sizeof a) n = sizeof a - 1;
        memcpy(a, chars + ti[5], n);
        a[n] = 0;
        copy_text(abbr, abbr_cap, (const unsigned char *)a);
    } else {
        abbr[0] = 0;
    }
    rc = NG_OK;
done:
    free(buf);
    return rc;
}

int store_local_time(edge_store *st, int64_t place, int64_t utc, store_localtime *out, ng_error *err) {
    store_place p;
    if (utc < 0 || utc > MAX_TIME) return ng_error_set(err, "local time: %" PRId64 " is not in [1970, 9999]", utc);
    if (store_get_place(st, place, &p, err)) return NG_ERR;
    memset(out, 0, sizeof *out);
    out->utc = utc;
    strcpy(out->tz, p.tz);
    if (p.tz[0] && valid_tz(p.tz) &&
        tzif_lookup(p.tz, utc, &out->offset_s, &out->is_dst, out->abbrev, sizeof out->abbrev) == NG_OK) {
        out->from_tzdata = 1;
    } else {
        out->offset_s = p.std_offset_min * 60;
        out->is_dst = -1;
    }
    out->local = utc + out->offset_s;
    int64_t y, days = out->local / 86400, secs = out->local % 86400;
    int m, d, a = abs(out->offset_s) % 86400; /* TZif offsets are under a day */
    civil_from_days(days, &y, &m, &d);
    snprintf(out->iso, sizeof out->iso, "%04d-%02d-%02dT%02d:%02d:%02d%c%02d:%02d", (int)(y % 10000), m, d,
             (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60), out->offset_s < 0 ? '-' : '+', a / 3600,
             a / 60 % 60);
    return NG_OK;
}

#include "edge/countries.h"

const char *store_country_name(const char *code) {
    size_t lo = 0, hi = sizeof NG_COUNTRIES / sizeof NG_COUNTRIES[0];
    while (lo < hi) { /* the table is sorted by code */
        size_t mid = (lo + hi) / 2;
        int c = strcmp(NG_COUNTRIES[mid].code, code);
        if (c == 0) return NG_COUNTRIES[mid].name;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return code;
}
