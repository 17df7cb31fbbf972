#include <stdio.h>
#include <stdarg.h>

__attribute__((noinline)) void log_msg(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

#define LOG(...) log_msg(__FILE__, __LINE__, __VA_ARGS__)

int port_write(int port, int val)
{
    if (port > 0xffff) {
        LOG("bad port %d\n", port);
        return -1;
    }
    LOG("write %d to port %d\n", val, port);
    return 0;
}
