/* netgpt edge-db — build and fill the edge node's context store (src/edge/store.h), and
 * query it by hand. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "edge/store.h"

static const char HELP[] =
    "usage: netgpt edge-db ACTION DB [options]\n"
    "\n"
    "The edge node's context store: places, cells, users and visits in one SQLite file.\n"
    "\n"
    "actions:\n"
    "  init DB                             create DB (or check an existing one)\n"
    "  import-places DB --cities FILE --brands FILE [--seed S]\n"
    "                                      replace all places with the cities and brands made by\n"
    "                                      tools/data/places/build_places.js; POIs are placed near\n"
    "                                      the cities from a hash of (S, city, category): same\n"
    "                                      files and S (default 0) give the same database\n"
    "  add-user DB --id ID [--lang en] [--prefs TEXT] [--home-lat X --home-lon Y]\n"
    "  add-visit DB --user ID --place PLACE_ID [--time ISO8601]   (default: now)\n"
    "  add-cell DB --id ID --lat X --lon Y --radius M\n"
    "  stats DB                            row counts\n"
    "  query DB --lat X --lon Y [--category C] [--kind city|poi] [--radius M] [--limit N]\n"
    "                                      nearest places (radius 0 = no limit; default 2000 m,\n"
    "                                      limit 5), the cell there and the local time\n"
    "  visits DB --user ID [--limit N]     a user's recent visits\n"
    "\n"
    "  --json        machine-readable output (stats, query, visits)\n"
    "\n"
    "IDs of users and cells: letters, digits, _ - . : (at most 64). Categories: cafe restaurant\n"
    "fast_food supermarket convenience pharmacy fuel hotel bank clothes electronics.\n"
    "City data: GeoNames (CC BY 4.0); brands: name-suggestion-index (OpenStreetMap).\n";

/* Prints s as a JSON string. */
static void json_str(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') printf("\\%c", *p);
        else if (*p < 0x20) printf("\\u%04x", *p);
        else putchar(*p);
    }
    putchar('"');
}

static void print_place_json(const store_place *p) {
    printf("{\"id\":%" PRId64 ",\"kind\":\"%s\",\"name\":", p->id, p->kind == STORE_POI ? "poi" : "city");
    json_str(p->name);
    if (p->kind == STORE_POI) {
        printf(",\"category\":\"%s\",\"brand\":", p->category);
        json_str(p->brand);
        printf(",\"city_id\":%" PRId64, p->city_id);
    } else {
        printf(",\"population\":%" PRId64, p->population);
    }
    printf(",\"country\":\"%s\",\"lat\":%.6f,\"lon\":%.6f,\"distance_m\":%.1f}", p->country, p->lat, p->lon,
           p->distance_m);
}

static edge_store *open_or_die(const char *path, int create) {
    ng_error err;
    edge_store *st = store_open(path, create, &err);
    if (!st) ng_die("%s", err.msg);
    return st;
}

int cmd_edge_db(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(HELP, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *action = argv[1], *db = NULL;
    const char *cities = NULL, *brands = NULL, *id = NULL, *user = NULL, *lang = "en", *prefs = "", *when = NULL;
    const char *category = NULL, *kind_s = NULL;
    double lat = NAN, lon = NAN, home_lat = NAN, home_lon = NAN, radius = NAN;
    long long place = -1, seed = 0;
    int limit = -1, json = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
#define IS(x) (strcmp(a, x) == 0)
        if (IS("-h") || IS("--help")) return fputs(HELP, stdout), 0;
        else if (IS("--json")) json = 1;
        else if (IS("--cities")) cities = cli_value(argc, argv, &i);
        else if (IS("--brands")) brands = cli_value(argc, argv, &i);
        else if (IS("--seed")) seed = cli_long(a, cli_value(argc, argv, &i), 0, 0x7fffffffffffffffL);
        else if (IS("--id")) id = cli_value(argc, argv, &i);
        else if (IS("--user")) user = cli_value(argc, argv, &i);
        else if (IS("--lang")) lang = cli_value(argc, argv, &i);
        else if (IS("--prefs")) prefs = cli_value(argc, argv, &i);
        else if (IS("--time")) when = cli_value(argc, argv, &i);
        else if (IS("--place")) place = cli_long(a, cli_value(argc, argv, &i), 1, 0x7fffffffffffffffL);
        else if (IS("--lat")) lat = cli_double(a, cli_value(argc, argv, &i), -90, 90);
        else if (IS("--lon")) lon = cli_double(a, cli_value(argc, argv, &i), -180, 180);
        else if (IS("--home-lat")) home_lat = cli_double(a, cli_value(argc, argv, &i), -90, 90);
        else if (IS("--home-lon")) home_lon = cli_double(a, cli_value(argc, argv, &i), -180, 180);
        else if (IS("--radius")) radius = cli_double(a, cli_value(argc, argv, &i), 0, STORE_MAX_RADIUS_M);
        else if (IS("--limit")) limit = (int)cli_long(a, cli_value(argc, argv, &i), 1, STORE_MAX_LIMIT);
        else if (IS("--category")) category = cli_value(argc, argv, &i);
        else if (IS("--kind")) kind_s = cli_value(argc, argv, &i);
        else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "netgpt edge-db: unknown option '%s' (see --help)\n", a);
            return 2;
        } else if (!db) db = a;
        else {
            fprintf(stderr, "netgpt edge-db: unexpected argument '%s'\n", a);
            return 2;
        }
#undef IS
    }
    if (!db) {
        fprintf(stderr, "netgpt edge-db %s: no database given (netgpt edge-db %s DB ...)\n", action, action);
        return 2;
    }
#define NEED(cond, what)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "netgpt edge-db %s: %s (see --help)\n", action, what);                          \
            return 2;                                                                                        \
        }                                                                                                    \
    } while (0)
    ng_error err;
    edge_store *st;
    if (!strcmp(action, "init")) {
        st = open_or_die(db, 1);
        printf("%s: edge store ready\n", db);
    } else if (!strcmp(action, "import-places")) {
        NEED(cities && brands, "--cities FILE and --brands FILE are required");
        st = open_or_die(db, 0);
        double t0 = ng_time();
        if (store_import_places(st, cities, brands, (uint64_t)seed, 1, &err)) ng_die("%s", err.msg);
        store_stats s;
        if (store_stats_get(st, &s, &err)) ng_die("%s", err.msg);
        printf("%s: %" PRId64 " cities, %" PRId64 " brands, %" PRId64 " POIs (seed %lld) in %.1f s\n", db, s.cities,
               s.brands, s.pois, seed, ng_time() - t0);
        printf("%s\n", STORE_ATTRIBUTION);
    } else if (!strcmp(action, "add-user")) {
        NEED(id, "--id ID is required");
        NEED(isnan(home_lat) == isnan(home_lon), "--home-lat and --home-lon go together");
        store_user u = {0};
        NEED(strlen(id) < sizeof u.id && strlen(lang) < sizeof u.language && strlen(prefs) < sizeof u.preferences,
             "--id, --lang or --prefs is too long");
        strcpy(u.id, id);
        strcpy(u.language, lang);
        strcpy(u.preferences, prefs);
        if (!isnan(home_lat)) u.has_home = 1, u.home_lat = home_lat, u.home_lon = home_lon;
        st = open_or_die(db, 0);
        if (store_add_user(st, &u, &err) || store_get_user(st, id, &u, &err)) ng_die("%s", err.msg);
        printf("user %s added", u.id);
        if (u.home_place) printf(" (home near place %" PRId64 ")", u.home_place);
        putchar('\n');
    } else if (!strcmp(action, "add-visit")) {
        NEED(user && place > 0, "--user ID and --place PLACE_ID are required");
        int64_t t = (int64_t)time(NULL);
        if (when && store_parse_time(when, &t, &err)) ng_die("--time: %s", err.msg);
        st = open_or_die(db, 0);
        if (store_add_visit(st, user, place, t, &err)) ng_die("%s", err.msg);
        printf("visit of %s to %lld at %" PRId64 " recorded\n", user, place, t);
    } else if (!strcmp(action, "add-cell")) {
        NEED(id && !isnan(lat) && !isnan(lon) && !isnan(radius), "--id, --lat, --lon and --radius are required");
        st = open_or_die(db, 0);
        if (store_add_cell(st, id, lat, lon, radius, &err)) ng_die("%s", err.msg);
        printf("cell %s added\n", id);
    } else if (!strcmp(action, "stats")) {
        store_stats s;
        st = open_or_die(db, 0);
        if (store_stats_get(st, &s, &err)) ng_die("%s", err.msg);
        if (json)
            printf("{\"cities\":%" PRId64 ",\"pois\":%" PRId64 ",\"brands\":%" PRId64 ",\"cells\":%" PRId64
                   ",\"users\":%" PRId64 ",\"visits\":%" PRId64 ",\"seed\":%" PRId64 "}\n",
                   s.cities, s.pois, s.brands, s.cells, s.users, s.visits, s.seed);
        else
            printf("cities  %" PRId64 "\npois    %" PRId64 "\nbrands  %" PRId64 "\ncells   %" PRId64 "\nusers   %" PRId64
                   "\nvisits  %" PRId64 "\n", s.cities, s.pois, s.brands, s.cells, s.users, s.visits);
    } else if (!strcmp(action, "query")) {
        NEED(!isnan(lat) && !isnan(lon), "--lat and --lon are required");
        store_query q = {.lat = lat, .lon = lon, .radius_m = isnan(radius) ? 2000 : radius, .category = category,
                         .limit = limit > 0 ? limit : 5};
        if (kind_s) {
            NEED(!strcmp(kind_s, "city") || !strcmp(kind_s, "poi"), "--kind is city or poi");
            q.kind = !strcmp(kind_s, "city") ? STORE_CITY : STORE_POI;
        }
        st = open_or_die(db, 0);
        store_place *out = xcalloc((size_t)q.limit, sizeof *out);
        int n;
        if (store_nearest(st, &q, out, &n, &err)) ng_die("%s", err.msg);
        store_cell cell;
        int has_cell;
        if (store_cell_at(st, lat, lon, &cell, &has_cell, &err)) ng_die("%s", err.msg);
        /* Local time at the nearest city: the zone of the place the user is in. */
        store_query cq = {.lat = lat, .lon = lon, .kind = STORE_CITY, .limit = 1};
        store_place city;
        int has_city;
        store_localtime lt;
        if (store_nearest(st, &cq, &city, &has_city, &err)) ng_die("%s", err.msg);
        if (has_city && store_local_time(st, city.id, (int64_t)time(NULL), &lt, &err)) ng_die("%s", err.msg);
        if (json) {
            printf("{\"places\":[");
            for (int i = 0; i < n; i++) {
                if (i) putchar(',');
                print_place_json(&out[i]);
            }
            printf("]");
            if (has_cell) {
                printf(",\"cell\":{\"id\":");
                json_str(cell.id);
                printf(",\"inside\":%s,\"distance_m\":%.1f}", cell.inside ? "true" : "false", cell.distance_m);
            }
            if (has_city) {
                printf(",\"city\":");
                print_place_json(&city);
                printf(",\"local_time\":\"%s\",\"tz\":", lt.iso);
                json_str(lt.tz);
            }
            printf("}\n");
        } else {
            for (int i = 0; i < n; i++)
                printf("%8.0f m  %-12" PRId64 " %-4s %-12s %s (%s)\n", out[i].distance_m, out[i].id,
                       out[i].kind == STORE_POI ? "poi" : "city", out[i].kind == STORE_POI ? out[i].category : "-",
                       out[i].name, out[i].country);
            if (!n) printf("no places within %.0f m\n", q.radius_m);
            if (has_cell) printf("cell: %s (%s, %.0f m from its centre)\n", cell.id, cell.inside ? "inside" : "nearest", cell.distance_m);
            if (has_city) printf("near: %s (%s); local time %s %s%s%s\n", city.name, city.country, lt.iso, lt.tz,
                                 lt.abbrev[0] ? " " : "", lt.abbrev);
        }
        free(out);
    } else if (!strcmp(action, "visits")) {
        NEED(user, "--user ID is required");
        int lim = limit > 0 ? limit : 10, n;
        store_visit *v = xcalloc((size_t)lim, sizeof *v);
        st = open_or_die(db, 0);
        if (store_recent_visits(st, user, v, lim, &n, &err)) ng_die("%s", err.msg);
        if (json) putchar('[');
        for (int i = 0; i < n; i++) {
            time_t t = (time_t)v[i].time;
            struct tm tm;
            char ts[32];
            strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
            if (json) {
                printf("%s{\"time\":\"%s\",\"place\":", i ? "," : "", ts);
                print_place_json(&v[i].place);
                putchar('}');
            } else {
                printf("%s  %-12" PRId64 " %s\n", ts, v[i].place.id, v[i].place.name);
            }
        }
        if (json) puts("]");
        free(v);
    } else {
        fprintf(stderr, "netgpt edge-db: unknown action '%s'\n\n%s", action, HELP);
        return 2;
    }
#undef NEED
    store_close(st);
    return 0;
}
