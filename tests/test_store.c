/* Edge context store: import of the committed GeoNames/NSI fixture, nearby queries checked
 * against hand-computed haversine distances, deterministic POI placement, the antimeridian
 * and the poles, users and visits, local time, and rejection of bad input and bad files. */
#include <sqlite3.h>
#include <sys/stat.h>

#include "edge/store.h"
#include "test.h"

#define CITIES TESTDATA("places/cities.tsv")
#define BRANDS TESTDATA("places/brands.tsv")

static void tmp_path(char *buf, size_t cap, const char *name) {
    mkdir("build", 0755);
    mkdir("build/tmp", 0755);
    snprintf(buf, cap, "build/tmp/test_store_%s.db", name);
    char side[600];
    remove(buf);
    snprintf(side, sizeof side, "%s-wal", buf);
    remove(side);
    snprintf(side, sizeof side, "%s-shm", buf);
    remove(side);
}

/* A fresh store with the fixture imported (seed 1). */
static edge_store *fixture_store(const char *name) {
    char path[256];
    ng_error err;
    tmp_path(path, sizeof path, name);
    edge_store *st = store_open(path, 1, &err);
    if (!st) {
        fprintf(stderr, "open: %s\n", err.msg);
        return NULL;
    }
    if (store_import_places(st, CITIES, BRANDS, 1, 0, &err)) {
        fprintf(stderr, "import: %s\n", err.msg);
        store_close(st);
        return NULL;
    }
    return st;
}

static edge_store *shared;

static void test_import_counts(void) {
    store_stats s;
    ng_error err;
    REQUIRE(shared, "fixture import failed");
    REQUIRE(store_stats_get(shared, &s, &err) == NG_OK, "%s", err.msg);
    CHECK(s.cities == 184, "cities %lld", (long long)s.cities);
    CHECK(s.brands == 99, "brands %lld", (long long)s.brands);
    CHECK(s.pois > 500, "pois %lld", (long long)s.pois);
    CHECK(s.seed == 1, "seed %lld", (long long)s.seed);
}

/* Paris (GeoNames 2988507) at its own coordinates is the nearest city, at distance 0. */
static void test_nearest_city_is_itself(void) {
    store_place p[3], paris;
    int n;
    ng_error err;
    REQUIRE(shared, "no store");
    REQUIRE(store_get_place(shared, 2988507, &paris, &err) == NG_OK, "%s", err.msg);
    CHECK(strcmp(paris.name, "Paris") == 0, "name %s", paris.name);
    store_query q = {.lat = paris.lat, .lon = paris.lon, .kind = STORE_CITY, .limit = 3};
    REQUIRE(store_nearest(shared, &q, p, &n, &err) == NG_OK, "%s", err.msg);
    REQUIRE(n == 3, "n %d", n);
    CHECK(p[0].id == 2988507 && p[0].distance_m == 0, "got %lld at %g", (long long)p[0].id, p[0].distance_m);
    CHECK(p[1].distance_m <= p[2].distance_m && p[0].distance_m <= p[1].distance_m, "not sorted");
    /* Tokyo too, with a radius. */
    q.lat = 35.6895, q.lon = 139.69171, q.radius_m = 1000, q.limit = 1;
    REQUIRE(store_nearest(shared, &q, p, &n, &err) == NG_OK, "%s", err.msg);
    CHECK(n == 1 && strcmp(p[0].name, "Tokyo") == 0, "n %d name %s", n, n ? p[0].name : "");
}

/* Distances against values computed independently (Python's math module, haversine,
 * R = 6371008.8 m): Paris (48.85341, 2.3488) - London (51.50853, -0.12574): 343,771.36 m;
 * Nuku'alofa (-21.13683, -175.20114) - Suva (-18.13683, 178.42531) across the antimeridian:
 * 746,076.09 m; a quarter meridian (0,0)-(90,0): pi/2 * R = 10,007,557.22 m. */
static void test_haversine_known(void) {
    double d1 = store_distance_m(48.85341, 2.3488, 51.50853, -0.12574);
    double d2 = store_distance_m(-21.13683, -175.20114, -18.13683, 178.42531);
    double d3 = store_distance_m(0, 0, 90, 0);
    CHECK(fabs(d1 - 343771.36) < 0.01, "Paris-London %f", d1);
    CHECK(fabs(d2 - 746076.09) < 0.01, "Nuku'alofa-Suva %f", d2);
    CHECK(fabs(d3 - 10007557.22) < 0.01, "quarter meridian %f", d3);
    CHECK(store_distance_m(10, 20, 10, 20) == 0, "zero");
    CHECK(fabs(store_distance_m(0, 179.9, 0, -179.9) - store_distance_m(0, -0.1, 0, 0.1)) < 1e-6, "wrap");
}

/* Every POI lies within STORE_POI_RADIUS_M of its city and carries a real category. */
static void test_poi_within_radius(void) {
    REQUIRE(shared, "no store");
    sqlite3 *db;
    char path[256];
    snprintf(path, sizeof path, "build/tmp/test_store_shared.db");
    REQUIRE(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK, "open");
    sqlite3_stmt *s;
    REQUIRE(sqlite3_prepare_v2(db, "SELECT p.lat, p.lon, c.lat, c.lon, p.category, p.id, c.id FROM places p JOIN "
                                   "places c ON c.id = p.city_id WHERE p.kind = 'poi'", -1, &s, NULL) == SQLITE_OK,
            "prepare");
    int n = 0, bad = 0, cats[16] = {0};
    double max_d = 0;
    while (sqlite3_step(s) == SQLITE_ROW) {
        double d = store_distance_m(sqlite3_column_double(s, 0), sqlite3_column_double(s, 1),
                                    sqlite3_column_double(s, 2), sqlite3_column_double(s, 3));
        if (d > max_d) max_d = d;
        int k = -1;
        for (int i = 0; store_categories[i]; i++)
            if (!strcmp((const char *)sqlite3_column_text(s, 4), store_categories[i])) k = i;
        if (k < 0 || sqlite3_column_int64(s, 5) / 1024 != sqlite3_column_int64(s, 6)) bad++;
        else cats[k]++;
        n++;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    CHECK(n > 500, "n %d", n);
    CHECK(max_d <= STORE_POI_RADIUS_M + 0.01, "POI %g m from its city", max_d);
    CHECK(max_d > STORE_POI_RADIUS_M * 0.9, "POIs do not spread: max %g m", max_d);
    CHECK(bad == 0, "%d POIs with a bad category or id", bad);
    for (int i = 0; store_categories[i]; i++) CHECK(cats[i] > 0, "no %s POI", store_categories[i]);
}

/* The whole places table as one string of rows, to compare two imports. */
static char *dump_places(const char *path) {
    sqlite3 *db;
    sqlite3_stmt *s;
    size_t cap = 1 << 20, n = 0;
    char *out = malloc(cap);
    out[0] = 0;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) return out;
    sqlite3_prepare_v2(db, "SELECT id || '|' || kind || '|' || name || '|' || ifnull(brand,'') || '|' || "
                           "printf('%.9f|%.9f', lat, lon) FROM places ORDER BY id", -1, &s, NULL);
    while (sqlite3_step(s) == SQLITE_ROW) {
        const char *r = (const char *)sqlite3_column_text(s, 0);
        size_t l = strlen(r);
        if (n + l + 2 > cap) out = realloc(out, cap *= 2);
        memcpy(out + n, r, l);
        n += l;
        out[n++] = '\n';
        out[n] = 0;
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
}

/* Two imports (into two files, and a re-import into the same file) give identical tables;
 * another seed gives other POIs. */
static void test_deterministic(void) {
    ng_error err;
    char a[256], b[256];
    edge_store *st = fixture_store("det_a");
    REQUIRE(st, "import a");
    store_close(st);
    st = fixture_store("det_b");
    REQUIRE(st, "import b");
    REQUIRE(store_import_places(st, CITIES, BRANDS, 1, 0, &err) == NG_OK, "re-import: %s", err.msg);
    store_close(st);
    snprintf(a, sizeof a, "build/tmp/test_store_det_a.db");
    snprintf(b, sizeof b, "build/tmp/test_store_det_b.db");
    char *da = dump_places(a), *db = dump_places(b);
    CHECK(strlen(da) > 10000 && strcmp(da, db) == 0, "imports differ (%zu vs %zu bytes)", strlen(da), strlen(db));
    st = store_open(b, 0, &err);
    REQUIRE(st, "%s", err.msg);
    REQUIRE(store_import_places(st, CITIES, BRANDS, 2, 0, &err) == NG_OK, "%s", err.msg);
    store_close(st);
    char *dc = dump_places(b);
    CHECK(strcmp(da, dc) != 0, "seed 2 gave the same POIs as seed 1");
    free(da);
    free(db);
    free(dc);
}

static void test_category_and_radius(void) {
    store_place p[50], all[50];
    int n, n_all;
    ng_error err;
    REQUIRE(shared, "no store");
    /* Central London: cafes within 3 km are cafes, sorted, inside the radius. */
    store_query q = {.lat = 51.50853, .lon = -0.12574, .radius_m = 3000, .category = "cafe", .limit = 50};
    REQUIRE(store_nearest(shared, &q, p, &n, &err) == NG_OK, "%s", err.msg);
    CHECK(n > 0, "no cafe near London");
    for (int i = 0; i < n; i++) {
        CHECK(!strcmp(p[i].category, "cafe") && p[i].kind == STORE_POI, "%s is %s", p[i].name, p[i].category);
        CHECK(p[i].distance_m <= 3000, "%g m", p[i].distance_m);
        CHECK(fabs(p[i].distance_m - store_distance_m(q.lat, q.lon, p[i].lat, p[i].lon)) < 1e-6, "distance");
        if (i) CHECK(p[i - 1].distance_m <= p[i].distance_m, "unsorted at %d", i);
    }
    /* The limit returns a prefix of the longer answer. */
    q.limit = 2;
    REQUIRE(store_nearest(shared, &q, all, &n_all, &err) == NG_OK, "%s", err.msg);
    CHECK(n_all == (n < 2 ? n : 2) && (n_all == 0 || all[0].id == p[0].id), "limit prefix");
    /* Radius edge: a radius just above / below the exact distance of a known city. */
    store_place london;
    REQUIRE(store_get_place(shared, 2643743, &london, &err) == NG_OK, "%s", err.msg);
    double d = store_distance_m(48.85341, 2.3488, london.lat, london.lon);
    store_query r = {.lat = 48.85341, .lon = 2.3488, .kind = STORE_CITY, .limit = 200};
    int found_in = 0, found_out = 0;
    r.radius_m = d + 1;
    REQUIRE(store_nearest(shared, &r, all, &n_all, &err) == NG_OK, "%s", err.msg);
    for (int i = 0; i < n_all; i++) found_in |= all[i].id == 2643743;
    r.radius_m = d - 1;
    REQUIRE(store_nearest(shared, &r, all, &n_all, &err) == NG_OK, "%s", err.msg);
    for (int i = 0; i < n_all; i++) found_out |= all[i].id == 2643743;
    CHECK(found_in && !found_out, "London at %g m: in %d out %d", d, found_in, found_out);
    /* Unknown category is an error, not an empty answer. */
    q.category = "spaceport";
    CHECK(store_nearest(shared, &q, p, &n, &err) == NG_ERR && strstr(err.msg, "spaceport"), "category: %s", err.msg);
}

/* Near the antimeridian the box must wrap: from (-18.1, 179.95) within 150 km are Levuka
 * (179.31667, 67 km west) and Tubou (-178.81232, 131 km east, across the line). */
static void test_antimeridian_and_poles(void) {
    store_place p[20];
    int n;
    ng_error err;
    REQUIRE(shared, "no store");
    store_query q = {.lat = -18.1, .lon = 179.95, .radius_m = 150000, .kind = STORE_CITY, .limit = 20};
    REQUIRE(store_nearest(shared, &q, p, &n, &err) == NG_OK, "%s", err.msg);
    int levuka = 0, tubou = 0;
    for (int i = 0; i < n; i++) {
        if (p[i].id == 2204417) {
            levuka = 1;
            CHECK(fabs(p[i].distance_m - store_distance_m(-18.1, 179.95, -18.06667, 179.31667)) < 1e-6, "levuka d");
        }
        if (p[i].id == 4035863) tubou = 1;
    }
    CHECK(levuka && tubou, "levuka %d tubou %d (n %d)", levuka, tubou, n);
    /* The same from the other side of the line. */
    q.lon = -179.95;
    REQUIRE(store_nearest(shared, &q, p, &n, &err) == NG_OK, "%s", err.msg);
    levuka = tubou = 0;
    for (int i = 0; i < n; i++) levuka |= p[i].id == 2204417, tubou |= p[i].id == 4035863;
    CHECK(levuka && tubou, "west side: levuka %d tubou %d", levuka, tubou);
    /* The exact antimeridian and the poles are valid points. */
    q.lon = 180, q.lat = -18.1;
    CHECK(store_nearest(shared, &q, p, &n, &err) == NG_OK && n >= 2, "lon 180: %d", n);
    /* North pole: Longyearbyen (78.22 N) is 1,310 km away; a radius around the pole finds it. */
    store_query pole = {.lat = 90, .lon = 0, .radius_m = 1400000, .kind = STORE_CITY, .limit = 5};
    REQUIRE(store_nearest(shared, &pole, p, &n, &err) == NG_OK, "%s", err.msg);
    CHECK(n >= 1 && p[0].id == 2729907, "pole: n %d first %s", n, n ? p[0].name : "");
    /* Unlimited radius from the south pole still finds the nearest city anywhere. */
    pole.lat = -90, pole.radius_m = 0, pole.limit = 1;
    REQUIRE(store_nearest(shared, &pole, p, &n, &err) == NG_OK, "%s", err.msg);
    CHECK(n == 1 && p[0].lat < -40, "south pole nearest: %s at %g", n ? p[0].name : "", n ? p[0].lat : 0);
}

static void test_users_visits_cells(void) {
    ng_error err;
    REQUIRE(shared, "no store");
    store_user u = {.id = "alice", .language = "fr", .preferences = "vegetarian; likes jazz", .has_home = 1,
                    .home_lat = 48.86, .home_lon = 2.35};
    REQUIRE(store_add_user(shared, &u, &err) == NG_OK, "%s", err.msg);
    store_user got;
    REQUIRE(store_get_user(shared, "alice", &got, &err) == NG_OK, "%s", err.msg);
    CHECK(!strcmp(got.language, "fr") && !strcmp(got.preferences, u.preferences) && got.has_home &&
              got.home_place == 2988507, "user %s %s %lld", got.language, got.preferences, (long long)got.home_place);
    /* A Paris POI and a London city, visited in this order. */
    store_place cafe[1];
    int n;
    store_query q = {.lat = 48.85341, .lon = 2.3488, .radius_m = 3000, .category = "cafe", .limit = 1};
    REQUIRE(store_nearest(shared, &q, cafe, &n, &err) == NG_OK && n == 1, "no Paris cafe");
    int64_t t1, t2;
    REQUIRE(store_parse_time("2024-03-01T09:30:00Z", &t1, &err) == NG_OK, "%s", err.msg);
    REQUIRE(store_parse_time("2024-03-02T10:30:00+01:00", &t2, &err) == NG_OK, "%s", err.msg);
    CHECK(t1 == 1709285400 && t2 == 1709371800, "t1 %lld t2 %lld", (long long)t1, (long long)t2);
    REQUIRE(store_add_visit(shared, "alice", cafe[0].id, t1, &err) == NG_OK, "%s", err.msg);
    REQUIRE(store_add_visit(shared, "alice", 2643743, t2, &err) == NG_OK, "%s", err.msg);
    store_visit v[5];
    REQUIRE(store_recent_visits(shared, "alice", v, 5, &n, &err) == NG_OK, "%s", err.msg);
    CHECK(n == 2 && v[0].time == t2 && v[0].place.id == 2643743 && !strcmp(v[0].place.name, "London") &&
              v[1].place.id == cafe[0].id && !strcmp(v[1].place.name, cafe[0].name), "visits n %d", n);
    CHECK(store_add_visit(shared, "bob", 2643743, t1, &err) == NG_ERR && strstr(err.msg, "bob"), "%s", err.msg);
    CHECK(store_add_visit(shared, "alice", 42, t1, &err) == NG_ERR && strstr(err.msg, "42"), "%s", err.msg);
    /* Cells: the point lies in the small cell (both contain it; the nearer centre wins); far
     * away, the cell with the nearest centre serves: from London paris-1 (342.6 km) rather
     * than paris-wide (346.2 km). */
    REQUIRE(store_add_cell(shared, "paris-1", 48.8566, 2.3522, 2000, &err) == NG_OK, "%s", err.msg);
    REQUIRE(store_add_cell(shared, "paris-wide", 48.80, 2.30, 20000, &err) == NG_OK, "%s", err.msg);
    REQUIRE(store_add_cell(shared, "fiji-1", -18.1, 179.99, 50000, &err) == NG_OK, "%s", err.msg);
    store_cell c;
    int found;
    REQUIRE(store_cell_at(shared, 48.857, 2.353, &c, &found, &err) == NG_OK, "%s", err.msg);
    CHECK(found && c.inside && !strcmp(c.id, "paris-1"), "cell %s", c.id);
    REQUIRE(store_cell_at(shared, -18.1, -179.9, &c, &found, &err) == NG_OK, "%s", err.msg);
    CHECK(found && c.inside && !strcmp(c.id, "fiji-1"), "antimeridian cell %s inside %d", c.id, c.inside);
    REQUIRE(store_cell_at(shared, 51.5, -0.12, &c, &found, &err) == NG_OK, "%s", err.msg);
    CHECK(found && !c.inside && !strcmp(c.id, "paris-1"), "nearest cell %s", c.id);
    REQUIRE(store_cell_at(shared, 48.70, 2.20, &c, &found, &err) == NG_OK, "%s", err.msg);
    CHECK(found && c.inside && !strcmp(c.id, "paris-wide"), "wide cell %s", c.id);
}

/* Local time in Paris: CET in winter, CEST in summer; Tokyo +09:00 all year; Suva +12:00. */
static void test_local_time(void) {
    store_localtime lt;
    ng_error err;
    int64_t winter, summer;
    REQUIRE(shared, "no store");
    store_parse_time("2024-01-15T12:00:00Z", &winter, &err);
    store_parse_time("2024-07-15T12:00:00Z", &summer, &err);
    REQUIRE(store_local_time(shared, 2988507, winter, &lt, &err) == NG_OK, "%s", err.msg);
    FILE *zi = fopen("/usr/share/zoneinfo/Europe/Paris", "rb");
    if (zi && !getenv("TZDIR")) CHECK(lt.from_tzdata, "tzdata present but not used");
    if (zi) fclose(zi);
    CHECK(lt.offset_s == 3600 && !strcmp(lt.iso, "2024-01-15T13:00:00+01:00"), "Paris winter %s", lt.iso);
    REQUIRE(store_local_time(shared, 2988507, summer, &lt, &err) == NG_OK, "%s", err.msg);
    if (lt.from_tzdata)
        CHECK(lt.offset_s == 7200 && lt.is_dst == 1 && !strcmp(lt.abbrev, "CEST") &&
                  !strcmp(lt.iso, "2024-07-15T14:00:00+02:00"), "Paris summer %s %s", lt.iso, lt.abbrev);
    else
        CHECK(lt.offset_s == 3600 && lt.is_dst == -1, "Paris summer fallback %d", lt.offset_s);
    /* DST starts in Paris at 2024-03-31T01:00Z: one second before and at it. */
    int64_t switch_t;
    store_parse_time("2024-03-31T01:00:00Z", &switch_t, &err);
    REQUIRE(store_local_time(shared, 2988507, switch_t - 1, &lt, &err) == NG_OK, "%s", err.msg);
    int before = lt.offset_s;
    REQUIRE(store_local_time(shared, 2988507, switch_t, &lt, &err) == NG_OK, "%s", err.msg);
    if (lt.from_tzdata) CHECK(before == 3600 && lt.offset_s == 7200, "switch %d -> %d", before, lt.offset_s);
    REQUIRE(store_local_time(shared, 1850147, summer, &lt, &err) == NG_OK, "%s", err.msg);
    CHECK(lt.offset_s == 9 * 3600 && !strcmp(lt.iso, "2024-07-15T21:00:00+09:00"), "Tokyo %s", lt.iso);
    /* A New York winter and summer (southern rules are covered by the same code path). */
    REQUIRE(store_local_time(shared, 5128581, summer, &lt, &err) == NG_OK, "%s", err.msg);
    CHECK(lt.offset_s == (lt.from_tzdata ? -4 : -5) * 3600, "New York summer %d", lt.offset_s);
    REQUIRE(store_local_time(shared, 2198148, winter, &lt, &err) == NG_OK, "%s", err.msg);
    CHECK(lt.offset_s == 12 * 3600, "Suva %d", lt.offset_s);
    /* Southern hemisphere: Auckland is NZDT (+13) in January, NZST (+12) in July. */
    REQUIRE(store_local_time(shared, 2193733, winter, &lt, &err) == NG_OK, "%s", err.msg);
    if (lt.from_tzdata) CHECK(lt.offset_s == 13 * 3600 && lt.is_dst == 1, "Auckland January %d", lt.offset_s);
    REQUIRE(store_local_time(shared, 2193733, summer, &lt, &err) == NG_OK, "%s", err.msg);
    CHECK(lt.offset_s == 12 * 3600, "Auckland July %d", lt.offset_s);
    /* A far-future time uses the footer rule: 2100-07-01 in Paris is still CEST. */
    int64_t future;
    store_parse_time("2100-07-01T00:00:00Z", &future, &err);
    REQUIRE(store_local_time(shared, 2988507, future, &lt, &err) == NG_OK, "%s", err.msg);
    if (lt.from_tzdata) CHECK(lt.offset_s == 7200, "Paris 2100 %d", lt.offset_s);
}

static void test_bad_inputs(void) {
    store_place p[2];
    int n;
    ng_error err;
    REQUIRE(shared, "no store");
    store_query q = {.lat = 91, .lon = 0, .radius_m = 10, .limit = 1};
    CHECK(store_nearest(shared, &q, p, &n, &err) == NG_ERR && strstr(err.msg, "latitude 91"), "%s", err.msg);
    q.lat = 0, q.lon = -180.5;
    CHECK(store_nearest(shared, &q, p, &n, &err) == NG_ERR && strstr(err.msg, "longitude"), "%s", err.msg);
    q.lon = NAN;
    CHECK(store_nearest(shared, &q, p, &n, &err) == NG_ERR, "NaN accepted");
    q.lon = 0, q.radius_m = -5;
    CHECK(store_nearest(shared, &q, p, &n, &err) == NG_ERR && strstr(err.msg, "radius"), "%s", err.msg);
    q.radius_m = 3e7;
    CHECK(store_nearest(shared, &q, p, &n, &err) == NG_ERR && strstr(err.msg, "radius"), "%s", err.msg);
    q.radius_m = 10, q.limit = 0;
    CHECK(store_nearest(shared, &q, p, &n, &err) == NG_ERR && strstr(err.msg, "limit"), "%s", err.msg);
    store_user u = {.id = "bad id", .language = "en"};
    CHECK(store_add_user(shared, &u, &err) == NG_ERR && strstr(err.msg, "' '"), "%s", err.msg);
    strcpy(u.id, "x'; DROP TABLE users; --");
    CHECK(store_add_user(shared, &u, &err) == NG_ERR, "quote accepted");
    strcpy(u.id, "ok"), strcpy(u.language, "e n");
    CHECK(store_add_user(shared, &u, &err) == NG_ERR && strstr(err.msg, "language"), "%s", err.msg);
    CHECK(store_add_cell(shared, "c", 0, 0, 0, &err) == NG_ERR && strstr(err.msg, "radius"), "%s", err.msg);
    int64_t t;
    const char *bad_times[] = {"2024-02-30T00:00:00Z", "2024-13-01T00:00Z", "yesterday", "2024-01-01", "1969-12-31T23:59:59Z",
                               "2024-01-01T00:00:00+25:00", "2024-01-01T00:00:00Zjunk"};
    for (size_t i = 0; i < sizeof bad_times / sizeof *bad_times; i++)
        CHECK(store_parse_time(bad_times[i], &t, &err) == NG_ERR && strstr(err.msg, bad_times[i]), "%s accepted",
              bad_times[i]);
    CHECK(store_get_place(shared, 1, p, &err) == NG_ERR && strstr(err.msg, "no place"), "%s", err.msg);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) fputs(text, f), fclose(f);
}

/* Bad TSV files fail with file:line and leave the previous import in place. */
static void test_bad_files(void) {
    ng_error err;
    store_stats before, after;
    edge_store *st = fixture_store("badfiles");
    REQUIRE(st, "import");
    REQUIRE(store_stats_get(st, &before, &err) == NG_OK, "%s", err.msg);
    const char *c = "build/tmp/test_store_bad_cities.tsv";
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"id\tname\n1\tx\n", ":1: header"},
        {"geonameid\tname\tasciiname\tcountry\tadmin1\tlat\tlon\tpopulation\ttimezone\tstd_offset_min\n"
         "1\tA\tA\tFR\t11\t95.0\t2.0\t10\tEurope/Paris\t60\n", ":2: coordinates"},
        {"geonameid\tname\tasciiname\tcountry\tadmin1\tlat\tlon\tpopulation\ttimezone\tstd_offset_min\n"
         "1\tA\tA\tFR\t11\t45.0\t2.0\t10\t../../etc/passwd\t60\n", ":2: timezone"},
        {"geonameid\tname\tasciiname\tcountry\tadmin1\tlat\tlon\tpopulation\ttimezone\tstd_offset_min\n"
         "1\tA\tA\tFR\t11\t45.0\t2.0\t10\tEurope/Paris\n", ":2: 9 fields"},
        {"geonameid\tname\tasciiname\tcountry\tadmin1\tlat\tlon\tpopulation\ttimezone\tstd_offset_min\n"
         "1\tA\tA\tFR\t11\t45.0\t2.0\t10\tEurope/Paris\t60\n1\tB\tB\tFR\t11\t45.0\t2.0\t10\tEurope/Paris\t60\n",
         ":3: geonameid 1 appears twice"},
        {"geonameid\tname\tasciiname\tcountry\tadmin1\tlat\tlon\tpopulation\ttimezone\tstd_offset_min\n"
         "x\tA\tA\tFR\t11\t45.0\t2.0\t10\tEurope/Paris\t60\n", ":2: geonameid"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_file(c, cases[i].text);
        CHECK(store_import_places(st, c, BRANDS, 1, 0, &err) == NG_ERR && strstr(err.msg, cases[i].want),
              "case %zu: %s", i, err.msg);
    }
    const char *b = "build/tmp/test_store_bad_brands.tsv";
    write_file(b, "category\tbrand\twikidata\tweight\tcountries\nspaceport\tX\t\t5\t*\n");
    CHECK(store_import_places(st, CITIES, b, 1, 0, &err) == NG_ERR && strstr(err.msg, ":2: unknown category"), "%s",
          err.msg);
    write_file(b, "category\tbrand\twikidata\tweight\tcountries\ncafe\tX\t\t5\tfrance\n");
    CHECK(store_import_places(st, CITIES, b, 1, 0, &err) == NG_ERR && strstr(err.msg, ":2: countries"), "%s", err.msg);
    CHECK(store_import_places(st, "build/tmp/no_such_file.tsv", BRANDS, 1, 0, &err) == NG_ERR &&
              strstr(err.msg, "no_such_file"), "%s", err.msg);
    REQUIRE(store_stats_get(st, &after, &err) == NG_OK, "%s", err.msg);
    CHECK(after.cities == before.cities && after.pois == before.pois && after.brands == before.brands,
          "a failed import changed the store");
    store_close(st);
}

/* Files that are not an edge store: a text file, a truncated/corrupt SQLite file, a missing
 * file without create, an SQLite file of someone else. */
static void test_bad_database(void) {
    ng_error err;
    char path[256];
    tmp_path(path, sizeof path, "notsqlite");
    write_file(path, "this is not a database, just some text that is long enough to fill a header........\n");
    CHECK(!store_open(path, 0, &err) && strstr(err.msg, path), "text file: %s", err.msg);
    CHECK(!store_open(path, 1, &err), "text file with create");
    /* A real store with its header page overwritten. */
    edge_store *st = fixture_store("corrupt");
    REQUIRE(st, "import");
    store_close(st);
    snprintf(path, sizeof path, "build/tmp/test_store_corrupt.db");
    FILE *f = fopen(path, "r+b");
    REQUIRE(f, "reopen");
    fseek(f, 0, SEEK_SET);
    fwrite("garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage", 1, 80, f);
    fclose(f);
    st = store_open(path, 0, &err);
    if (st) { /* WAL may hold the schema; a query must then fail cleanly */
        store_stats s;
        CHECK(store_stats_get(st, &s, &err) == NG_ERR, "corrupt file read");
        store_close(st);
    }
    tmp_path(path, sizeof path, "missing");
    CHECK(!store_open(path, 0, &err) && strstr(err.msg, "edge-db init"), "missing: %s", err.msg);
    tmp_path(path, sizeof path, "other");
    sqlite3 *db;
    REQUIRE(sqlite3_open(path, &db) == SQLITE_OK, "sqlite");
    sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL);
    sqlite3_close(db);
    CHECK(!store_open(path, 0, &err) && strstr(err.msg, "not a netgpt edge store"), "other: %s", err.msg);
}

static void test_country_names(void) {
    CHECK(!strcmp(store_country_name("FR"), "France") && !strcmp(store_country_name("CI"), "Côte d’Ivoire") &&
              !strcmp(store_country_name("US"), "United States") && !strcmp(store_country_name("Q1"), "Q1"),
          "country names");
}

int main(void) {
    RUN(test_country_names);
    shared = fixture_store("shared");
    RUN(test_import_counts);
    RUN(test_nearest_city_is_itself);
    RUN(test_haversine_known);
    RUN(test_poi_within_radius);
    RUN(test_deterministic);
    RUN(test_category_and_radius);
    RUN(test_antimeridian_and_poles);
    RUN(test_users_visits_cells);
    RUN(test_local_time);
    RUN(test_bad_inputs);
    RUN(test_bad_files);
    RUN(test_bad_database);
    store_close(shared);
    TEST_EXIT();
}
