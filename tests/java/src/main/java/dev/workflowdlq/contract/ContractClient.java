package dev.workflowdlq.contract;

import com.google.protobuf.DescriptorProtos.FileDescriptorSet;
import com.google.protobuf.Descriptors.Descriptor;
import com.google.protobuf.Descriptors.EnumValueDescriptor;
import com.google.protobuf.Descriptors.FileDescriptor;
import com.google.protobuf.DynamicMessage;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.protobuf.util.JsonFormat;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.function.Predicate;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The Kafka contract of workflow-dlq (docs/design.md §2–4) as a Java team meets it: the real
 * kafka-clients with a transactional producer and the default partitioner, read_committed
 * consumers, and protobuf-java's strict {@code JsonFormat.parser()} (no ignoringUnknownFields)
 * for everything the service writes. Messages are DynamicMessages of the descriptor set the Rust
 * build compiles from proto/, so no protoc is needed.
 *
 * <p>Environment: BOOTSTRAP, DESCRIPTORS (descriptor set file), TOPIC_FAILURES, TOPIC_STORE,
 * TOPIC_COMMANDS, TOPIC_RESULTS, TOPIC_EXECUTIONS, FAILURES (default 200), RESTARTS (default 20).
 * Any broken expectation throws, so the run (mvn exec:java) fails.
 */
public final class ContractClient {
  private static final String PKG = "workflow.dlq.v1.";
  private static final Duration DEADLINE = Duration.ofSeconds(60);
  private static final JsonFormat.Parser STRICT = JsonFormat.parser();

  private final Map<String, String> env = System.getenv();
  private final String bootstrap = need("BOOTSTRAP");
  private final FileDescriptor proto;

  private ContractClient() throws Exception {
    FileDescriptorSet set = FileDescriptorSet.parseFrom(Files.readAllBytes(Path.of(need("DESCRIPTORS"))));
    if (set.getFileCount() != 1) {
      throw new IllegalStateException("expected one proto file, got " + set.getFileCount());
    }
    proto = FileDescriptor.buildFrom(set.getFile(0), new FileDescriptor[0]);
  }

  public static void main(String[] args) throws Exception {
    long started = System.nanoTime();
    new ContractClient().run();
    System.out.printf("[java] contract client: all checks passed in %.1f s%n", (System.nanoTime() - started) / 1e9);
  }

  private String need(String name) {
    String v = env.get(name);
    if (v == null || v.isBlank()) {
      throw new IllegalStateException("environment variable " + name + " is required");
    }
    return v;
  }

  private Descriptor type(String name) {
    Descriptor d = proto.findMessageTypeByName(name);
    if (d == null) {
      throw new IllegalStateException("no message " + name + " in the descriptor set");
    }
    return d;
  }

  /** Strict: an unknown field or enum value in what the service wrote is an error. */
  private DynamicMessage parse(String typeName, String json) throws InvalidProtocolBufferException {
    DynamicMessage.Builder b = DynamicMessage.newBuilder(type(typeName));
    STRICT.merge(json, b);
    return b.build();
  }

  private static String print(Message m) throws InvalidProtocolBufferException {
    return JsonFormat.printer().omittingInsignificantWhitespace().print(m);
  }

  private static Object field(Message m, String name) {
    return m.getField(m.getDescriptorForType().findFieldByName(name));
  }

  private static String str(Message m, String name) {
    return (String) field(m, name);
  }

  private static long num(Message m, String name) {
    return ((Number) field(m, name)).longValue();
  }

  private static String enumName(Message m, String name) {
    return ((EnumValueDescriptor) field(m, name)).getName();
  }

  @SuppressWarnings("unchecked")
  private static List<Message> list(Message m, String name) {
    return (List<Message>) field(m, name);
  }

  private static void check(boolean ok, String what) {
    if (!ok) {
      throw new AssertionError(what);
    }
  }

  /** docs/design.md §3: "dlq-" + the first 16 bytes of SHA-256(event_id), lower-case hex. */
  static String dlqId(String eventId) throws Exception {
    byte[] digest = MessageDigest.getInstance("SHA-256").digest(eventId.getBytes(StandardCharsets.UTF_8));
    return "dlq-" + HexFormat.of().formatHex(digest, 0, 16);
  }

  private KafkaProducer<String, String> transactionalProducer() {
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "java-contract-" + UUID.randomUUID());
    p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    // No partitioner set: Kafka's default (murmur2 of the key), as the design asks of producers.
    KafkaProducer<String, String> producer = new KafkaProducer<>(p);
    producer.initTransactions();
    return producer;
  }

  private static RecordHeaders json() {
    RecordHeaders h = new RecordHeaders();
    h.add("content-type", "application/json".getBytes(StandardCharsets.UTF_8));
    return h;
  }

  /**
   * Reads a whole topic, committed records only, from the beginning until {@code done} holds of
   * what was read (or, with {@code done == null}, up to the topic's current stable end).
   */
  private List<ConsumerRecord<String, String>> read(String topic, Predicate<List<ConsumerRecord<String, String>>> done) {
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
      List<TopicPartition> parts = new ArrayList<>();
      c.partitionsFor(topic, DEADLINE).forEach(i -> parts.add(new TopicPartition(topic, i.partition())));
      c.assign(parts);
      c.seekToBeginning(parts);
      List<ConsumerRecord<String, String>> out = new ArrayList<>();
      long deadline = System.nanoTime() + DEADLINE.toNanos();
      // read_committed: the end offsets are the last stable offsets.
      Map<TopicPartition, Long> ends = done == null ? c.endOffsets(parts) : Map.of();
      while (System.nanoTime() < deadline) {
        c.poll(Duration.ofMillis(200)).forEach(out::add);
        if (done != null ? done.test(out) : parts.stream().allMatch(tp -> c.position(tp) >= ends.get(tp))) {
          return out;
        }
      }
      throw new AssertionError("timed out reading " + topic + " (" + out.size() + " records read)");
    }
  }

  private void run() throws Exception {
    int failures = Integer.parseInt(env.getOrDefault("FAILURES", "200"));
    int restarts = Integer.parseInt(env.getOrDefault("RESTARTS", "20"));
    String runId = UUID.randomUUID().toString().substring(0, 8);

    // 1. Failures, JSON FailureEnvelopes in one transaction, keyed by the workflow run id.
    List<String> ids = new ArrayList<>();
    try (KafkaProducer<String, String> producer = transactionalProducer()) {
      producer.beginTransaction();
      for (int i = 0; i < failures; i++) {
        String eventId = "java-evt-" + runId + "-" + i;
        String run = "wfr_java_" + runId + "_" + i;
        // Built through the strict parser, so a typo here would fail here, and printed
        // canonically: what a Java producer of generated classes would write.
        Message envelope = parse("FailureEnvelope", """
            {"failure": {"eventId": "%s", "workflowRunId": "%s",
             "workflowUrl": "https://app.example.com/api/workflow", "workflowCreatedAt": "%d",
             "method": "POST", "body": "eyJrIjoxfQ==", "maxRetries": 3, "labels": ["java"],
             "header": {"Content-Type": {"values": ["application/json"]}},
             "completedSteps": [{"stepId": 1, "stepName": "init", "out": "Im9rIg=="}],
             "failedStep": {"stepId": 2, "stepName": "charge"}, "responseStatus": 500,
             "failedAt": "%d", "errorMessage": "step charge failed"}}
            """.formatted(eventId, run, System.currentTimeMillis(), System.currentTimeMillis()));
        producer.send(new ProducerRecord<>(need("TOPIC_FAILURES"), null, run, print(envelope), json()));
        ids.add(dlqId(eventId));
      }
      producer.commitTransaction();
    }
    Set<String> expected = new HashSet<>(ids);
    List<ConsumerRecord<String, String>> store = read(need("TOPIC_STORE"), recs -> {
      Set<String> seen = new HashSet<>();
      recs.forEach(r -> seen.add(r.key()));
      return seen.containsAll(expected);
    });
    for (ConsumerRecord<String, String> r : store) {
      if (r.value() == null) {
        continue;
      }
      Message entry = parse("DlqEntry", r.value());
      check(r.key().equals(str(entry, "dlq_id")), "store key " + r.key() + " is the entry's dlqId");
      Message event = (Message) field(entry, "event");
      check(dlqId(str(event, "event_id")).equals(r.key()), "dlqId " + r.key() + " derived from the event id as documented");
    }
    System.out.printf("[java] %d failures stored, keyed by their documented dlqId%n", failures);

    // 2. Commands in one transaction: one-id RESTARTs keyed by dlqId, and bad ones keyed by id.
    Map<String, String> restartOf = new HashMap<>();
    Map<String, String> rejected = new HashMap<>();
    rejected.put("java-dryrun-" + runId, "unknown_field: unknown field \"dryrun\" in RecoveryCommand");
    rejected.put("java-ids-" + runId, "unknown_field: unknown field \"ids\" in RecoveryCommand");
    rejected.put("java-explode-" + runId, "unknown_enum_value: unknown value \"EXPLODE\" for RecoveryCommand.action");
    rejected.put("java-action99-" + runId, "unknown_enum_value: unknown value 99 for RecoveryCommand.action");
    rejected.put("java-broken-" + runId, "undecodable: invalid JSON: ");
    try (KafkaProducer<String, String> producer = transactionalProducer()) {
      producer.beginTransaction();
      for (int i = 0; i < restarts; i++) {
        String id = ids.get(i);
        String commandId = "java-restart-" + runId + "-" + i;
        restartOf.put(commandId, id);
        Message cmd = parse("RecoveryCommand", """
            {"commandId": "%s", "action": "RESTART", "dlqIds": {"ids": ["%s"]},
             "requestedBy": "java-client", "requestedAt": "%d"}
            """.formatted(commandId, id, System.currentTimeMillis()));
        producer.send(new ProducerRecord<>(need("TOPIC_COMMANDS"), null, id, print(cmd), json()));
      }
      // Lenient decoding would have run these: a misspelt dry run of a restart of everything,
      // a misspelt id list. The others do not decode at all, but their commandId is readable.
      String[] bad = {
        "{\"commandId\":\"java-dryrun-%s\",\"action\":\"RESTART\",\"all\":true,\"dryrun\":true}",
        "{\"commandId\":\"java-ids-%s\",\"action\":\"DELETE\",\"ids\":[\"" + ids.get(restarts) + "\"]}",
        "{\"commandId\":\"java-explode-%s\",\"action\":\"EXPLODE\",\"all\":true}",
        "{\"commandId\":\"java-action99-%s\",\"action\":99,\"all\":true}",
        "{\"commandId\":\"java-broken-%s\",\"action\":\"RESTART\",\"dlqIds\":",
      };
      for (String raw : bad) {
        String value = raw.formatted(runId);
        String commandId = value.substring(14, value.indexOf('"', 14));
        producer.send(new ProducerRecord<>(need("TOPIC_COMMANDS"), null, commandId, value, json()));
      }
      producer.commitTransaction();
    }

    // 3. Results: every command answered, keyed by its id, parsed strictly.
    Set<String> waiting = new HashSet<>(restartOf.keySet());
    waiting.addAll(rejected.keySet());
    List<ConsumerRecord<String, String>> results = read(need("TOPIC_RESULTS"), recs -> {
      Set<String> finished = new HashSet<>();
      for (ConsumerRecord<String, String> r : recs) {
        if (r.value().contains("\"done\":true")) {
          finished.add(r.key());
        }
      }
      return finished.containsAll(waiting);
    });
    Map<String, List<Message>> byCommand = new HashMap<>();
    for (ConsumerRecord<String, String> r : results) {
      Message result = parse("CommandResult", r.value());
      check(r.key().equals(str(result, "command_id")), "result key " + r.key() + " is the command id");
      byCommand.computeIfAbsent(r.key(), k -> new ArrayList<>()).add(result);
    }
    for (Map.Entry<String, String> e : restartOf.entrySet()) {
      List<Message> rs = byCommand.get(e.getKey());
      // Keyed by dlqId with the default partitioner, it reached the entry's owner: one final
      // record, no fan-out.
      check(rs != null && rs.size() == 1, e.getKey() + ": one result record, got " + rs);
      Message done = rs.get(0);
      List<Message> items = list(done, "items");
      check((Boolean) field(done, "done") && items.size() == 1, e.getKey() + ": a final result with its item: " + done);
      check(enumName(items.get(0), "status").equals("OK"), e.getKey() + ": OK: " + done);
      check(str(items.get(0), "dlq_id").equals(e.getValue()), e.getKey() + ": the item is its entry");
      check(num(done, "matched") == 1 && num(done, "succeeded") == 1 && num(done, "failed") == 0, e.getKey() + ": totals " + done);
      check(str(done, "requested_by").equals("java-client"), e.getKey() + ": requestedBy copied");
    }
    for (Map.Entry<String, String> e : rejected.entrySet()) {
      List<Message> rs = byCommand.get(e.getKey());
      check(rs != null && rs.size() == 1, e.getKey() + ": one result record, got " + rs);
      Message done = rs.get(0);
      List<Message> items = list(done, "items");
      check((Boolean) field(done, "done") && items.size() == 1, e.getKey() + ": a final result: " + done);
      check(enumName(items.get(0), "status").equals("REJECTED"), e.getKey() + ": REJECTED: " + done);
      String detail = str(items.get(0), "detail");
      check(detail.startsWith(e.getValue()), e.getKey() + ": detail \"" + detail + "\" starts with \"" + e.getValue() + "\"");
    }
    System.out.printf("[java] %d restarts answered OK, %d misspelt/undecodable commands answered REJECTED%n", restarts, rejected.size());

    // 4. Executions: exactly the runs asked for, once each, keyed by the new run id. They commit
    // with their results, so every one is readable now.
    List<ConsumerRecord<String, String>> executions = read(need("TOPIC_EXECUTIONS"), null);
    Map<String, String> sources = new HashMap<>();
    Set<String> byCommandId = new HashSet<>();
    for (ConsumerRecord<String, String> r : executions) {
      Message ex = parse("WorkflowExecution", r.value());
      check(r.key().equals(str(ex, "workflow_run_id")), "execution key is the new run id");
      check(enumName(ex, "kind").equals("RESTART"), "a RESTART execution: " + ex);
      String source = str(ex, "source_dlq_id");
      check(sources.put(source, str(ex, "workflow_run_id")) == null, "one execution for " + source);
      String commandId = str(ex, "command_id");
      check(source.equals(restartOf.get(commandId)), "execution of " + source + " caused by its command, not " + commandId);
      byCommandId.add(commandId);
    }
    check(executions.size() == restarts && byCommandId.equals(restartOf.keySet()),
        "exactly " + restarts + " executions, got " + executions.size());
    System.out.printf("[java] executions exact: %d runs, one per RESTART%n", executions.size());
  }
}
