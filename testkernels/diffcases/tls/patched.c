/* The changed function uses an unchanged thread-local: a TLS reference. */
__thread int vcpu_id;
__thread long last_exit;

__attribute__((noinline)) long record_exit(long reason)
{
    last_exit = reason | ((long)vcpu_id << 32);
    return vcpu_id;
}
