/* log.h: leveled, timestamped logging to stderr, plain text or JSON lines.
 * Log an error once, where it happens, with the context a person needs;
 * callers just propagate false. Never pass a password to these functions. */
#ifndef PGSHIFT_LOG_H
#define PGSHIFT_LOG_H

#include <stdbool.h>

typedef enum pgs_log_level {
    PGS_LOG_DEBUG = 0,
    PGS_LOG_INFO = 1,
    PGS_LOG_WARN = 2,
    PGS_LOG_ERROR = 3,
} pgs_log_level;

void pgs_log_set_level(pgs_log_level level);
void pgs_log_set_json(bool json);
/* Parses "debug|info|warn|error"; false if unknown. */
bool pgs_log_parse_level(const char *s, pgs_log_level *out);

void pgs_log(pgs_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) pgs_log(PGS_LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  pgs_log(PGS_LOG_INFO, __VA_ARGS__)
#define log_warn(...)  pgs_log(PGS_LOG_WARN, __VA_ARGS__)
#define log_error(...) pgs_log(PGS_LOG_ERROR, __VA_ARGS__)

#endif
